// Command storagebench is the storage workload of cmd/vmcompose's
// BenchmarkStorage: one static binary (CGO_ENABLED=0) that runs the same
// work on the host and inside a guest, timing it where it runs so that a
// VM's boot is not counted. In a directory (-dir) it writes a file
// sequentially and fsyncs it, drops it from the page cache, reads it back,
// then creates, stats and deletes many small files, and prints one JSON
// line (Result) with the file system type of the directory and the time
// of each phase.
//
// It owns the workload only, and imports nothing but the standard library
// and golang.org/x/sys, so that it runs in any guest.
package main
