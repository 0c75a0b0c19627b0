package agentd

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmcompose/vmcompose/guest/agent"
)

// FindPort returns the device of the virtio-serial port with the given name,
// waiting up to timeout for it to appear. There is no udev in the guest:
// the name is in /sys/class/virtio-ports/*/name, the device node in
// /dev/<vportNpM> (devtmpfs).
func FindPort(name string, timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	for {
		ents, _ := os.ReadDir("/sys/class/virtio-ports")
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join("/sys/class/virtio-ports", e.Name(), "name"))
			if err == nil && strings.TrimSpace(string(b)) == name {
				return "/dev/" + e.Name(), nil
			}
		}
		if time.Now().After(deadline) {
			return "", fmt.Errorf("no virtio-serial port named %q in /sys/class/virtio-ports", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ServePort serves hosts on a virtio-serial port, one connection after the
// other, for ever.
//
// How the port behaves (virtio_console): while no host is connected, a read
// returns 0 bytes at once and a write blocks. So between connections the
// port is polled every pollInterval; within one, a 0-byte read means the
// host went away, which ends the session, and deadlines unblock the writes
// that would otherwise wait for the next host.
func (s *Server) ServePort(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("agent port: %w", err)
	}
	defer f.Close()
	for {
		f.SetDeadline(time.Time{})
		c := &portConn{f: f}
		if err := agent.GuestHandshake(waitingReader{f}, deadlineWriter{f}); err != nil {
			s.log.Warn("agent handshake", "err", err)
			time.Sleep(pollInterval)
			continue
		}
		s.log.Debug("host connected")
		if err := s.Serve(c); err != nil {
			s.log.Warn("agent session", "err", err)
		}
		s.log.Debug("host disconnected")
	}
}

const pollInterval = 10 * time.Millisecond

// waitingReader reads the port, treating "no host" (0 bytes) as a reason
// to wait rather than an end.
type waitingReader struct{ f *os.File }

func (r waitingReader) Read(p []byte) (int, error) {
	for {
		n, err := r.f.Read(p)
		if n > 0 || (err != nil && !errors.Is(err, io.EOF)) {
			return n, err
		}
		time.Sleep(pollInterval)
	}
}

// deadlineWriter fails a write that waits for a host for too long.
type deadlineWriter struct{ f *os.File }

func (w deadlineWriter) Write(p []byte) (int, error) {
	w.f.SetWriteDeadline(time.Now().Add(5 * time.Second))
	defer w.f.SetWriteDeadline(time.Time{})
	return w.f.Write(p)
}

// portConn is one session's view of the port. Close does not close the
// device (the next host uses it): it unblocks the session's reads and
// writes.
type portConn struct {
	f *os.File
}

func (c *portConn) Read(p []byte) (int, error) { return c.f.Read(p) }

func (c *portConn) Write(p []byte) (int, error) { return c.f.Write(p) }

func (c *portConn) Close() error {
	return c.f.SetDeadline(time.Unix(1, 0))
}
