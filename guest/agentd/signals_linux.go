package agentd

import (
	"os"
	"os/signal"

	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/guest/agent"
)

// HandleSignals makes vminit, as PID 1, act on the signals sent to it
// inside the guest (`kill 1`, the kernel's Ctrl-Alt-Del): SIGTERM, SIGINT
// and SIGPWR shut down as the power button does; SIGHUP, SIGUSR1, SIGUSR2,
// SIGQUIT and SIGWINCH go on to the service process, as tini forwards them.
// Without this the Go runtime would exit on SIGTERM, and PID 1 exiting
// panics the kernel.
func (s *Server) HandleSignals() {
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, unix.SIGTERM, unix.SIGINT, unix.SIGPWR,
		unix.SIGHUP, unix.SIGUSR1, unix.SIGUSR2, unix.SIGQUIT, unix.SIGWINCH)
	go func() {
		for sig := range ch {
			switch sig {
			case unix.SIGTERM, unix.SIGINT, unix.SIGPWR:
				s.log.Info("shutdown signal", "signal", sig)
				s.PowerButton()
			default:
				s.mu.Lock()
				pid := s.pid
				running := s.phase == agent.PhaseRunning || s.phase == agent.PhaseStopping
				s.mu.Unlock()
				if running {
					unix.Kill(pid, sig.(unix.Signal))
				}
			}
		}
	}()
}
