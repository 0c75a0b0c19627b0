// Package planner turns what a compose project wants and what runs now into
// an ordered, explainable plan: the dependency graph, cycle errors, the
// per-service config hash and the operations (create, recreate, start, stop,
// remove) with their reasons, grouped in waves that may run in parallel.
//
// The planner is a pure function. It must not import os, net, io/fs,
// os/exec, or any package of this module that does; internal/importrules
// enforces it.
package planner
