//go:build !linux

package unixsock

import (
	"fmt"
	"path/filepath"
)

// shortPath calls f with the socket's path; other systems have no
// /proc/self/fd, so a state dir too deep for a socket address is an error.
func shortPath(dir, name string, f func(string) error) error {
	p := filepath.Join(dir, name)
	if len(p) > MaxPath {
		return fmt.Errorf("socket path %s is longer than %d bytes: set XDG_STATE_HOME to a shorter directory", p, MaxPath)
	}
	return f(p)
}
