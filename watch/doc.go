// Package watch owns watching host paths for `vmcompose watch` (compose's
// develop.watch) and batching their changes: a Watcher follows every
// rule's path with inotify (fsnotify), recursively, and after a short
// quiet period hands over one Batch per rule that lists, path by path, the
// final state to give the guest (write, mkdir or delete). List walks a
// rule's path the same way for initial_sync. Ignored paths (the rule's
// ignore and include, a .dockerignore, editor temp files, .git) and paths
// a bind mount already shares are left out. Files follows a few named
// files (a project's compose and env files) the same way, through their
// directories.
//
// It knows no VM, agent or CLI: what a Batch is sent to, and which action
// follows it, is the caller's business.
package watch
