//go:build linux

package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/vmcompose/vmcompose/internal/atomicfile"
)

// Accelerators.
const (
	AccelAuto = ""    // KVM when it works here, else TCG
	AccelKVM  = "kvm" // hardware virtualisation
	AccelTCG  = "tcg" // QEMU's emulator
)

// AccelEnv overrides the accelerator a driver in auto mode picks:
// VMCOMPOSE_ACCEL=tcg or kvm.
const AccelEnv = "VMCOMPOSE_ACCEL"

// kvmProbeTimeout bounds the trial boot that decides whether KVM works:
// with KVM the kernel reaches its "no root" panic in well under a second.
const kvmProbeTimeout = 8 * time.Second

var probeMu sync.Mutex

type probeResult struct {
	BootID string `json:"boot_id"`
	Qemu   string `json:"qemu"`
	Kernel string `json:"kernel"`
	KVM    bool   `json:"kvm"`
	Detail string `json:"detail,omitempty"`
}

// kvmWorks decides whether KVM can boot kernel on this host. An openable
// /dev/kvm is not enough: nested or emulated KVM can create VMs whose vCPUs
// then hang or fail on MSRs, so the answer comes from a trial boot of the
// real kernel without a root file system, which panics and, with panic=-1
// and -no-reboot, ends qemu. The answer is cached for the host's boot in
// the user's cache directory, since the trial costs up to
// kvmProbeTimeout when KVM is broken.
func kvmWorks(ctx context.Context, qemuBin, kernel string, log *slog.Logger) bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()

	probeMu.Lock()
	defer probeMu.Unlock()
	key := probeResult{BootID: bootID(), Qemu: qemuBin, Kernel: kernel}
	cache := ""
	if dir, err := os.UserCacheDir(); err == nil {
		cache = filepath.Join(dir, "vmcompose", "kvm-probe.json")
		if b, err := os.ReadFile(cache); err == nil {
			var r probeResult
			if json.Unmarshal(b, &r) == nil && r.BootID == key.BootID && r.Qemu == key.Qemu && r.Kernel == key.Kernel {
				return r.KVM
			}
		}
	}
	res := key
	res.KVM, res.Detail = probeKVM(ctx, qemuBin, kernel)
	if ctx.Err() != nil {
		return false // not an answer: do not cache it
	}
	log.Info("KVM probe", "kvm", res.KVM, "detail", res.Detail)
	if cache != "" {
		b, _ := json.Marshal(res)
		if os.MkdirAll(filepath.Dir(cache), 0o755) == nil {
			atomicfile.WriteFile(cache, b, 0o644) // a cache: losing it costs a probe
		}
	}
	return res.KVM
}

func probeKVM(ctx context.Context, qemuBin, kernel string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, kvmProbeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemuBin,
		"-M", "microvm,acpi=on", "-accel", "kvm", "-cpu", "host", "-m", "128",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-kernel", kernel, "-append", "console=ttyS0 panic=-1 quiet loglevel=0")
	out, err := cmd.CombinedOutput()
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return false, fmt.Sprintf("trial boot did not end within %s", kvmProbeTimeout)
	case err != nil:
		return false, fmt.Sprintf("trial boot: %v: %s", err, lastLine(out))
	}
	return true, ""
}
