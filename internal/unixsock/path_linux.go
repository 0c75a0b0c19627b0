package unixsock

import (
	"fmt"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// shortPath calls f with a path to name in dir that fits a unix socket
// address: the path itself when short enough, else the same file through
// /proc/self/fd/N of an O_PATH descriptor of dir (Linux resolves the
// magic link while binding or connecting).
func shortPath(dir, name string, f func(string) error) error {
	if p := filepath.Join(dir, name); len(p) <= MaxPath {
		return f(p)
	}
	fd, err := unix.Open(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening %s: %w", dir, err)
	}
	defer unix.Close(fd)
	return f("/proc/self/fd/" + strconv.Itoa(fd) + "/" + name)
}
