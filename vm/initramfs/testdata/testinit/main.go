// Command testinit is a minimal guest init for the initramfs tests: it
// loads the manifest's modules, reports each one and the virtio devices it
// finds on the console, prints a marker and powers the VM off.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/vm/initramfs/modload"
)

func main() {
	start := time.Now()
	err := run()
	if err != nil {
		fmt.Printf("TESTINIT FAIL: %v\n", err)
	} else {
		fmt.Printf("TESTINIT OK in %v\n", time.Since(start).Round(time.Millisecond))
	}
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func run() error {
	for _, m := range []struct{ src, dst, fs string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
	} {
		if err := unix.Mount(m.src, m.dst, m.fs, 0, ""); err != nil {
			return fmt.Errorf("mounting %s: %w", m.dst, err)
		}
	}
	mods, err := modload.Read(modload.ManifestPath)
	if err != nil {
		return err
	}
	fmt.Printf("TESTINIT manifest %d modules\n", len(mods))
	for _, m := range mods {
		t := time.Now()
		if err := modload.Load(m); err != nil {
			return err
		}
		fmt.Printf("TESTINIT loaded %s %v\n", modload.Name(m), time.Since(t).Round(time.Microsecond))
	}
	// Devices probe asynchronously after their driver loads.
	deadline := time.Now().Add(5 * time.Second)
	for _, want := range strings.Split(os.Getenv("TESTINIT_EXPECT"), ",") {
		if want == "" {
			continue
		}
		for {
			ms, _ := filepath.Glob(want)
			if len(ms) > 0 {
				fmt.Printf("TESTINIT found %s\n", want)
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("no %s after 5s", want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	uptime, _ := os.ReadFile("/proc/uptime")
	fmt.Printf("TESTINIT uptime %s", uptime)
	return nil
}
