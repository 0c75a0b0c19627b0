package agentd

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/guest/agent"
)

// HasVsockDevice reports whether the VM has a virtio vsock device (virtio
// device id 19).
func HasVsockDevice() bool {
	ents, _ := os.ReadDir("/sys/bus/virtio/devices")
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join("/sys/bus/virtio/devices", e.Name(), "device"))
		if err == nil && strings.TrimSpace(string(b)) == "0x0013" {
			return true
		}
	}
	return false
}

// ListenVsock opens the agent's vsock listener (port agent.VsockPort), for
// backends with vsock instead of virtio-serial (vz, Cloud Hypervisor). It
// fails when the guest kernel has no vsock transport.
func ListenVsock() (int, error) {
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("vsock: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: agent.VsockPort}); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("vsock port %d: %w", agent.VsockPort, err)
	}
	if err := unix.Listen(fd, 4); err != nil {
		unix.Close(fd)
		return -1, fmt.Errorf("vsock port %d: %w", agent.VsockPort, err)
	}
	return fd, nil
}

// ServeVsock serves hosts that connect to the listener, one connection
// after the other, for ever. The handshake runs as on virtio-serial.
func (s *Server) ServeVsock(lfd int) error {
	for {
		nfd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if err != nil {
			if err == unix.EINTR || err == unix.ECONNABORTED {
				continue
			}
			return fmt.Errorf("vsock accept: %w", err)
		}
		c := os.NewFile(uintptr(nfd), "vsock")
		if err := agent.GuestHandshake(c, c); err != nil {
			s.log.Warn("agent handshake", "err", err)
			c.Close()
			continue
		}
		s.log.Debug("host connected", "via", "vsock")
		if err := s.Serve(c); err != nil {
			s.log.Warn("agent session", "err", err)
		}
		c.Close()
	}
}
