package main

import (
	"io"
	"log/slog"
	"os"
	"strings"
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
	if bootErr == nil {
		// The virtio devices were probed as virtio_mmio loaded: now the
		// drivers only some VMs need (NICs, shared folders).
		mods, err := modload.LoadForDevices(modload.OnDemandPath, modload.Modaliases("virtio"))
		if len(mods) > 0 {
			log.Debug("modules loaded for the devices", "modules", mods)
		}
		bootErr = err
	}
	serve, chanErr := channel()
	if bootErr == nil {
		bootErr = boot.SetupRoot(log)
	}
	if bootErr == nil {
		if err := boot.LoopbackUp(); err != nil {
			log.Warn("loopback", "err", err)
		}
	}
	if bootErr != nil {
		log.Error("boot", "err", bootErr)
	} else {
		log.Info("root ready")
	}
	if chanErr != nil {
		// Nobody can be told anything: stop here.
		log.Error("control channel", "err", chanErr)
		boot.Poweroff(log)
	}
	srv := agentd.New(log, bootErr)
	srv.HandleSignals()
	boot.WatchPowerButton(log, srv.PowerButton)
	go func() {
		err := serve(srv)
		log.Error("control channel", "err", err)
		boot.Poweroff(log)
	}()
	srv.WaitPoweroff()
	boot.Poweroff(log)
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
	b, _ := os.ReadFile("/proc/cmdline")
	for _, f := range strings.Fields(string(b)) {
		if f == "vminit.debug" || f == "vminit.debug=1" {
			return slog.LevelDebug
		}
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
