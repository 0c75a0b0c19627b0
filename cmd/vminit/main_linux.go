package main

import (
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

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
		ReplaceAttr: dropTime,
	}))
	log.Info("starting", "uptime", uptime())

	bootErr := earlyErr
	if bootErr == nil {
		var mods []string
		mods, bootErr = modload.LoadAll(modload.ManifestPath)
		log.Debug("modules loaded", "modules", mods)
	}
	port, portErr := "", error(nil)
	if bootErr == nil {
		port, portErr = agentd.FindPort(agent.PortName, 5*time.Second)
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
		log.Info("root ready", "uptime", uptime())
	}
	if portErr != nil {
		// Nobody can be told anything: stop here.
		log.Error("control channel", "err", portErr)
		boot.Poweroff(log)
	}
	srv := agentd.New(log, bootErr)
	go func() {
		err := srv.ServePort(port)
		log.Error("control channel", "err", err)
		boot.Poweroff(log)
	}()
	srv.WaitPoweroff()
	boot.Poweroff(log)
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

func dropTime(_ []string, a slog.Attr) slog.Attr {
	if a.Key == slog.TimeKey {
		return slog.Attr{}
	}
	return a
}

func uptime() time.Duration {
	b, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return 0
	}
	secs, _, _ := strings.Cut(string(b), " ")
	d, _ := time.ParseDuration(secs + "s")
	return d
}

// prefixWriter puts "vminit: " before each log line (one Write each).
type prefixWriter struct{ w io.Writer }

func (p prefixWriter) Write(b []byte) (int, error) {
	if _, err := p.w.Write(append([]byte("vminit: "), b...)); err != nil {
		return 0, err
	}
	return len(b), nil
}
