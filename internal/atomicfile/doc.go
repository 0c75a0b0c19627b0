// Package atomicfile writes files so that a crash, a kill or a failed write
// leaves the old file or the new one, complete, and never a torn one: the
// content goes to a temporary file in the same directory, which is fsynced,
// renamed over the target, and followed by an fsync of the directory so
// the rename itself survives a power loss.
//
// Temporary files are named TempPrefix + the target's base name + "-" and
// a random suffix; a writer that dies leaves one behind, and the package
// that owns the directory removes them (while it knows no writer runs).
//
// It imports only the standard library, so any package may use it.
package atomicfile
