package terminal

import (
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

type sizes chan [2]uint16

func (s sizes) Resize(rows, cols uint16) error {
	s <- [2]uint16{rows, cols}
	return nil
}

// TestRaw drives Raw over a real pseudo-terminal: the terminal is raw
// while it runs (no echo, no line editing, Ctrl-C a plain byte), a resize
// reaches the far end, and restore gives the terminal back its mode and
// stops following the size.
func TestRaw(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	defer tty.Close()
	pty.Setsize(ptmx, &pty.Winsize{Rows: 30, Cols: 100})
	if rows, cols := Size(tty); rows != 30 || cols != 100 {
		t.Errorf("Size: %dx%d, want 30x100", rows, cols)
	}
	before, err := term.GetState(int(tty.Fd()))
	if err != nil {
		t.Fatal(err)
	}

	got := make(sizes, 4)
	restore := Raw(tty, got)
	tio, err := unix.IoctlGetTermios(int(tty.Fd()), getTermios)
	if err != nil {
		t.Fatal(err)
	}
	if tio.Lflag&(unix.ECHO|unix.ICANON|unix.ISIG) != 0 {
		t.Errorf("the terminal is not raw: lflag %#x", tio.Lflag)
	}
	// The kernel signals the terminal's foreground process group on a
	// resize; this test's process is not in it, so it signals itself.
	pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: 120})
	syscall.Kill(os.Getpid(), syscall.SIGWINCH)
	select {
	case s := <-got:
		if s != [2]uint16{40, 120} {
			t.Errorf("resized to %v, want 40x120", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the resize did not reach the far end")
	}

	restore()
	after, err := term.GetState(int(tty.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if *after != *before {
		t.Errorf("the terminal's mode was not restored: before %+v, after %+v", *before, *after)
	}
	pty.Setsize(ptmx, &pty.Winsize{Rows: 50, Cols: 130})
	syscall.Kill(os.Getpid(), syscall.SIGWINCH)
	select {
	case s := <-got:
		t.Errorf("resized to %v after restore", s)
	case <-time.After(200 * time.Millisecond):
	}
}

// TestNotATerminal: a pipe has no size (24x80 then) and Raw leaves it
// alone.
func TestNotATerminal(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if rows, cols := Size(r); rows != 24 || cols != 80 || IsTerminal(r) {
		t.Errorf("a pipe: %dx%d, terminal %v", rows, cols, IsTerminal(r))
	}
	Raw(r, make(sizes, 1))()
}
