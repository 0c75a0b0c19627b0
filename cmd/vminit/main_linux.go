package main

import (
	"io"
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/guest/agentd"
	"github.com/vmcompose/vmcompose/guest/boot"
	"github.com/vmcompose/vmcompose/vm/initramfs/modload"
)

func main() {
	if os.Getpid() != 1 {
		os.Stderr.WriteString("vminit: must run as PID 1 of a vmcompose guest\n")
		os.Exit(2)
	}
	earlyErr := boot.Early()
	log := slog.New(slog.NewTextHandler(prefixWriter{os.Stderr}, &slog.HandlerOptions{
		Level:       logLevel(),
		ReplaceAttr: bootTime,
	}))
	log.Info("starting")

	bootErr := earlyErr
	if bootErr == nil {
		mods, err := modload.LoadAll(modload.ManifestPath)
		log.Debug("modules loaded", "modules", mods)
		bootErr = err
	}
	// A template waits for its devices: it is saved before it has any,
	// and each copy restored from it gets its own (see agent.PhaseTemplate).
	template := bootErr == nil && boot.KernelFlag("vminit.template")
	if bootErr == nil && !template {
		bootErr = setupDevices(log)
	}
	serve, chanErr := channel()
	if chanErr != nil {
		// Nobody can be told anything: stop here.
		log.Error("control channel", "err", chanErr)
		boot.Poweroff(log)
	}
	var srv *agentd.Server
	switch {
	case template:
		srv = agentd.NewTemplate(log, func(r agent.Resume) error {
			if err := boot.Reseed(r.Entropy); err != nil {
				return err
			}
			if err := boot.SetClock(r.Time); err != nil {
				log.Warn("clock", "err", err)
			}
			n, err := boot.ProbeVirtioMMIO()
			log.Debug("restored from a template", "devices", n)
			if err != nil {
				return err
			}
			return setupDevices(log)
		})
	case bootErr != nil:
		log.Error("boot", "err", bootErr)
		srv = agentd.New(log, bootErr)
	default:
		log.Info("root ready")
		srv = agentd.New(log, nil)
	}
	srv.HandleSignals()
	boot.WatchPowerButton(log, srv.PowerButton)
	go func() {
		err := serve(srv)
		log.Error("control channel", "err", err)
		boot.Poweroff(log)
	}()
	if template {
		// The VMM saves the guest once it reads this line.
		log.Info("template ready")
	}
	srv.WaitPoweroff()
	boot.Poweroff(log)
}

// setupDevices loads the drivers of the VM's devices (NICs, shared folders),
// sets up the root from its disks and brings the loopback interface up.
func setupDevices(log *slog.Logger) error {
	// The virtio devices were probed as virtio_mmio loaded: now the drivers
	// only some VMs need.
	mods, err := modload.LoadForDevices(modload.OnDemandPath, modload.Modaliases("virtio"))
	if len(mods) > 0 {
		log.Debug("modules loaded for the devices", "modules", mods)
	}
	if err != nil {
		return err
	}
	if err := boot.SetupRoot(log); err != nil {
		return err
	}
	if err := boot.LoopbackUp(); err != nil {
		log.Warn("loopback", "err", err)
	}
	return nil
}

// channel finds the control channel: vsock when the VM has a virtio vsock
// device (vz, Cloud Hypervisor), else the virtio-serial port (QEMU).
func channel() (func(*agentd.Server) error, error) {
	if agentd.HasVsockDevice() {
		fd, err := agentd.ListenVsock()
		if err != nil {
			return nil, err
		}
		return func(s *agentd.Server) error { return s.ServeVsock(fd) }, nil
	}
	port, err := agentd.FindPort(agent.PortName, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return func(s *agentd.Server) error { return s.ServePort(port) }, nil
}

// logLevel is debug when the kernel command line has vminit.debug.
func logLevel() slog.Level {
	if boot.KernelFlag("vminit.debug") {
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// bootTime replaces the wall-clock time of log lines, meaningless in a
// fresh guest, with the time since boot.
func bootTime(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.String("t", uptime().Round(time.Millisecond).String())
	}
	return a
}

func uptime() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// prefixWriter puts "vminit: " before each log line (one Write each).
type prefixWriter struct{ w io.Writer }

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := p.w.Write(append([]byte("vminit: "), b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}
