//go:build linux

package main_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testimage"
	"github.com/vmcompose/vmcompose/vm/initramfs"
	"github.com/vmcompose/vmcompose/vm/kernel/kerneltest"
	"github.com/vmcompose/vmcompose/vm/vmtest"
)

// BenchmarkRun compares, interleaved in the same run, the floor (raw
// qemu-system-x86_64 booting the same kernel with a trivial init that
// powers off at once) with the whole `vmcompose run --rm svc true`
// process on an already-pulled image. Target: ratio ≤ 1.3.
func BenchmarkRun(b *testing.B) {
	k := kerneltest.Kernel(b)
	trivial, err := initramfs.Build(context.Background(), k, vmtest.Init(b), b.TempDir(), initramfs.WithModules())
	if err != nil {
		b.Fatal(err)
	}
	p := newRunProject(b)
	compose := "services:\n  svc:\n    image: " + p.push("busybox", testimage.Busybox(b)) + "\n"
	vmcompose := func(args ...string) {
		if stdout, stderr, code := p.run(compose, args...); code != 0 {
			b.Fatalf("vmcompose %s: exit %d\n%s%s", strings.Join(args, " "), code, stdout, stderr)
		}
	}
	vmcompose("pull")

	tsc := guestTSC(b)
	floor := func() time.Duration {
		dir := b.TempDir()
		t0 := time.Now()
		cmd := exec.Command("qemu-system-x86_64",
			"-M", "microvm,acpi=on", "-accel", "tcg,tb-size=64", "-m", "256",
			"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
			"-global", "virtio-mmio.force-legacy=false",
			"-kernel", k.Image, "-initrd", trivial,
			"-append", fmt.Sprintf("console=ttyS0 quiet panic=-1 tsc_early_khz=%d tsc=reliable pci=off cryptomgr.notests initcall_blacklist=init_kprobe_trace,crypto_kdf108_init vmtest.mode=exit", tsc),
			"-serial", "file:"+filepath.Join(dir, "console.log"))
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("floor qemu: %v: %s", err, out)
		}
		return time.Since(t0)
	}
	run := func() time.Duration {
		t0 := time.Now()
		vmcompose("run", "--rm", "svc", "true")
		return time.Since(t0)
	}
	floor()
	run()
	var floors, runs []time.Duration
	for b.Loop() {
		floors = append(floors, floor())
		runs = append(runs, run())
	}
	fm, rm := median(floors), median(runs)
	b.ReportMetric(fm.Seconds(), "floor-s")
	b.ReportMetric(rm.Seconds(), "run-s")
	b.ReportMetric(rm.Seconds()/fm.Seconds(), "ratio")
	b.ReportMetric(slices.Min(runs).Seconds()/slices.Min(floors).Seconds(), "ratio-of-min")
}

// BenchmarkRunSecrets compares, interleaved in the same run, `vmcompose
// run --rm` of a service without secrets and of the same service with
// three secrets and two configs that its command reads: the cost of
// reading, sending and writing them. Target: ratio ≤ 1.05.
func BenchmarkRunSecrets(b *testing.B) {
	p := newRunProject(b)
	ref := p.push("busybox", testimage.Busybox(b))
	dir := filepath.Join(p.home, "project")
	os.MkdirAll(dir, 0o755)
	for _, f := range []string{"a", "b", "c"} {
		os.WriteFile(filepath.Join(dir, f), bytes.Repeat([]byte(f), 4096), 0o600)
	}
	compose := `services:
  plain:
    image: ` + ref + `
    command: ["cat", "/etc/hostname"]
  with:
    image: ` + ref + `
    command: ["cat", "/run/secrets/a", "/run/secrets/b", "/etc/c.key", "/c1", "/etc/c2.conf"]
    secrets: [a, b, {source: c, target: /etc/c.key, mode: 0400}]
    configs: [c1, {source: c2, target: /etc/c2.conf}]
secrets:
  a: {file: ./a}
  b: {file: ./b}
  c: {file: ./c}
configs:
  c1: {content: "c1"}
  c2: {file: ./c}
`
	run := func(svc string) time.Duration {
		t0 := time.Now()
		if stdout, stderr, code := p.run(compose, "run", "--rm", "-T", svc); code != 0 {
			b.Fatalf("run %s: exit %d\n%s%s", svc, code, stdout, stderr)
		}
		return time.Since(t0)
	}
	run("plain")
	run("with")
	var plain, with []time.Duration
	for b.Loop() {
		plain = append(plain, run("plain"))
		with = append(with, run("with"))
	}
	b.ReportMetric(median(plain).Seconds(), "plain-s")
	b.ReportMetric(median(with).Seconds(), "secrets-s")
	b.ReportMetric(median(with).Seconds()/median(plain).Seconds(), "ratio")
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// guestTSC is the TSC frequency the driver gives a TCG guest: "cpu MHz"
// when this host is itself a VM.
func guestTSC(b *testing.B) int {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "cpu MHz"); ok {
			var mhz float64
			fmt.Sscanf(strings.TrimLeft(v, "\t :"), "%f", &mhz)
			return int(mhz * 1000)
		}
	}
	b.Fatal("no cpu MHz in /proc/cpuinfo")
	return 0
}
