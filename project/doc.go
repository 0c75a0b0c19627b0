// Package project loads compose projects the way docker compose does:
// file discovery, -f merging, COMPOSE_* variables, profiles, .env and
// --env-file, interpolation, include and extends (all through
// compose-go/v2), and the x-vm extension validated against the schema in
// package schema.
//
// It starts nothing and talks to no backend. Errors name the file, the
// service and the field, and say how to fix the input.
package project
