// Package unixsock listens on and dials unix sockets named by a folder and
// a file name, also when the whole path is longer than a socket address
// can hold: a project's state dir may be deep. It imports only the
// standard library and x/sys, so any package may use it.
package unixsock

import (
	"context"
	"net"
)

// MaxPath is what fits in sockaddr_un.sun_path with its NUL.
const MaxPath = 107

// Listen listens on name in dir. Closing the listener leaves the socket
// file: whoever replaces it removes it first.
func Listen(dir, name string) (*net.UnixListener, error) {
	var l *net.UnixListener
	err := shortPath(dir, name, func(p string) error {
		ln, err := net.Listen("unix", p)
		if err != nil {
			return err
		}
		l = ln.(*net.UnixListener)
		l.SetUnlinkOnClose(false)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// Dial connects to name in dir.
func Dial(ctx context.Context, dir, name string) (net.Conn, error) {
	var conn net.Conn
	err := shortPath(dir, name, func(p string) error {
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", p)
		conn = c
		return err
	})
	return conn, err
}
