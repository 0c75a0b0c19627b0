package terminal

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/term"
)

// Size is the size of the terminal f, 24x80 when it cannot tell.
func Size(f *os.File) (rows, cols uint16) {
	if w, h, err := term.GetSize(int(f.Fd())); err == nil && w > 0 && h > 0 {
		return uint16(h), uint16(w)
	}
	return 24, 80
}

// IsTerminal reports whether f is a terminal.
func IsTerminal(f *os.File) bool { return term.IsTerminal(int(f.Fd())) }

// Resizer is the far end of a terminal: it takes the new size when the
// host's terminal changes size.
type Resizer interface {
	Resize(rows, cols uint16) error
}

// Raw puts the terminal f in raw mode and has r follow its size (on
// SIGWINCH) until restore is called, which puts the terminal back in the
// mode it had. When f is not a terminal it only follows the size.
func Raw(f *os.File, r Resizer) (restore func()) {
	fd := int(f.Fd())
	old, err := term.MakeRaw(fd)
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-winch:
				r.Resize(Size(f))
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(winch)
		close(done)
		<-stopped // no resize after restore
		if err == nil {
			term.Restore(fd, old)
		}
	}
}
