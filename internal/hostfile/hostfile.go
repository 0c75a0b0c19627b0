// Package hostfile reads host files that are sent to a guest as they were
// listed: a regular file, never through a symlink, as exactly the size it
// had when it was seen. A sync header carries that size before the
// content is read, so a file that grew or shrank meanwhile must still
// give exactly that many bytes; the change that made it differ is sent
// again by whoever saw it.
//
// It imports only the standard library, so any package may use it.
package hostfile

import (
	"errors"
	"io"
	"os"
	"syscall"
)

// ErrSpecial is a path a guest cannot be given as a file: a socket, a
// pipe, a device.
var ErrSpecial = errors.New("not a regular file, directory or symlink")

// Open reads the regular file abs as exactly size bytes: cut when it is
// longer now, padded with zeros when shorter. A symlink at abs is an
// error (ELOOP), and anything else but a regular file is ErrSpecial.
func Open(abs string, size int64) (io.ReadCloser, error) {
	fd, err := os.OpenFile(abs, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	fi, err := fd.Stat()
	if err != nil {
		fd.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		fd.Close()
		return nil, ErrSpecial
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(io.MultiReader(fd, zeros{}), size), fd}, nil
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
