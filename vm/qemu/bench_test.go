//go:build linux

package qemu_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/vm/initramfs"
	"github.com/vmcompose/vmcompose/vm/kernel/kerneltest"
	"github.com/vmcompose/vmcompose/vm/qemu"
	"github.com/vmcompose/vmcompose/vm/vmtest"
)

// BenchmarkBoot compares, in the same run and interleaved:
//
//   - floor: raw qemu-system-x86_64 booting the same kernel, microvm recipe
//     of DESIGN.md, with an initramfs holding only a static init that
//     powers off at once;
//   - vmcompose: Driver Create + Start of a service VM (vminit, guest
//     modules, the busybox image's read-only rootfs, a 1 GiB scratch
//     disk), the agent's Start of `true`, its exit status, the guest's
//     power-off, and Remove: what `vmcompose run --rm svc true` does on an
//     already-pulled image.
//
// It reports both medians and their ratio (target ≤ 1.3), the ratio of the
// fastest runs, then the host
// memory of the qemu process of an idle service with a 256 MiB guest, from
// /proc/<pid>/smaps_rollup, and how much of it is guest RAM the guest has
// touched.
func BenchmarkBoot(b *testing.B) {
	f := realGuest(b)
	k := kerneltest.Kernel(b)
	trivial, err := initramfs.Build(context.Background(), k, vmtest.Init(b), b.TempDir(), initramfs.WithModules())
	if err != nil {
		b.Fatal(err)
	}
	qemuBin, _ := exec.LookPath("qemu-system-x86_64")
	tsc := hostTSCkHz()
	root := b.TempDir()
	d, err := qemu.New(root)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()

	floor := func() time.Duration {
		dir := b.TempDir()
		t0 := time.Now()
		cmd := exec.Command(qemuBin,
			"-M", "microvm,acpi=on", "-accel", "tcg", "-m", "256",
			"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
			"-global", "virtio-mmio.force-legacy=false",
			"-kernel", k.Image, "-initrd", trivial,
			"-append", fmt.Sprintf("console=ttyS0 quiet panic=-1 tsc_early_khz=%d tsc=reliable pci=off cryptomgr.notests initcall_blacklist=init_kprobe_trace,crypto_kdf108_init vmtest.mode=exit", tsc),
			"-serial", "file:"+filepath.Join(dir, "console.log"))
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("floor qemu: %v: %s", err, out)
		}
		took := time.Since(t0)
		if c, _ := os.ReadFile(filepath.Join(dir, "console.log")); !strings.Contains(string(c), "vmtest: poweroff reason=exit") {
			b.Fatalf("floor guest did not reach its init:\n%s", c)
		}
		return took
	}

	run := func(i int) time.Duration {
		name := fmt.Sprintf("true-%d", i)
		ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		t0 := time.Now()
		if err := d.Create(ctx, f.serviceSpec(name)); err != nil {
			b.Fatal(err)
		}
		if err := d.Start(ctx, name); err != nil {
			b.Fatal(err)
		}
		st, err := d.Inspect(ctx, name)
		if err != nil {
			b.Fatal(err)
		}
		c, err := agent.DialSocket(ctx, st.Agent)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(ctx, agent.Spec{Command: []string{"true"}}); err != nil {
			b.Fatal(err)
		}
		tSpawn := st.StartedAt.Sub(t0)
		tDial := time.Since(t0)
		exit, err := c.Wait(ctx)
		if err != nil || exit.Code != 0 {
			b.Fatalf("service true: %+v, %v", exit, err)
		}
		c.Close()
		if st, err := vm.Wait(ctx, d, name); err != nil || st.State != vm.StateExited {
			b.Fatalf("VM after the service exited: %+v, %v", st, err)
		}
		tExit := time.Since(t0)
		if err := d.Remove(ctx, name); err != nil {
			b.Fatal(err)
		}
		b.Logf("run %d: qemu spawned %v, agent up and service started %v, VM exited %v, removed %v", i, tSpawn, tDial, tExit, time.Since(t0))
		return time.Since(t0)
	}

	floor() // warm the page cache for both
	run(-1)
	var floors, runs []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		floors = append(floors, floor())
		runs = append(runs, run(i))
	}
	b.StopTimer()
	fm, rm := median(floors), median(runs)
	b.ReportMetric(fm.Seconds(), "floor-s")
	b.ReportMetric(rm.Seconds(), "vmcompose-s")
	b.ReportMetric(rm.Seconds()/fm.Seconds(), "ratio")
	// On a shared machine noise only adds time: the ratio of the fastest
	// runs is the steadier figure.
	b.ReportMetric(slices.Min(runs).Seconds()/slices.Min(floors).Seconds(), "ratio-of-min")
	b.Logf("floor %v, vmcompose %v (medians of %d)", floors, runs, len(runs))

	mem := idleMemory(b, d, f)
	b.ReportMetric(mem.rss, "idle-rss-MiB")
	b.ReportMetric(mem.pss, "idle-pss-MiB")
	b.ReportMetric(mem.guest, "idle-guest-touched-MiB")
	b.ReportMetric(mem.tcg, "idle-tcg-MiB")
	b.Logf("idle 256 MiB service: qemu Rss %.1f MiB, Pss %.1f MiB; guest RAM touched %.1f MiB, TCG code buffer %.1f MiB, kernel and initramfs file mappings %.1f + %.1f MiB (page cache, shared by VMs)",
		mem.rss, mem.pss, mem.guest, mem.tcg, mem.kernel, mem.initrd)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

type memFigures struct {
	rss, pss, guest, tcg, kernel, initrd float64 // MiB
}

// idleMemory starts a service VM with a 256 MiB guest whose service
// sleeps, lets it settle, and reads its qemu's memory.
func idleMemory(b *testing.B, d *qemu.Driver, f guestFixture) memFigures {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sp := f.serviceSpec("idle")
	if err := d.Create(ctx, sp); err != nil {
		b.Fatal(err)
	}
	defer d.Remove(context.Background(), "idle")
	defer d.Kill(context.Background(), "idle")
	if err := d.Start(ctx, "idle"); err != nil {
		b.Fatal(err)
	}
	st, err := d.Inspect(ctx, "idle")
	if err != nil {
		b.Fatal(err)
	}
	c, err := agent.DialSocket(ctx, st.Agent)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(ctx, agent.Spec{Command: []string{"sleep", "3600"}}); err != nil {
		b.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	var m memFigures
	rollup := readKB(b, fmt.Sprintf("/proc/%d/smaps_rollup", st.Pid))
	m.rss, m.pss = rollup["Rss"]/1024, rollup["Pss"]/1024
	// Per mapping: guest RAM is the anonymous mapping of the guest's size
	// (QEMU may add a little alignment), the TCG code buffer the one of
	// tb-size, the kernel the file mapping of the vmlinux.
	for _, mp := range smaps(b, st.Pid) {
		switch {
		case mp.path == "" && mp.size >= float64(sp.Memory>>10) && mp.size <= float64(sp.Memory>>10)+4096:
			m.guest += mp.rss / 1024
		case mp.path == "" && mp.size > 64*1024-16 && mp.size <= 64*1024: // tb-size less a guard page
			m.tcg += mp.rss / 1024
		case mp.path == sp.Kernel:
			m.kernel += mp.rss / 1024
		case mp.path == sp.Initramfs:
			m.initrd += mp.rss / 1024
		}
	}
	return m
}

func readKB(b *testing.B, path string) map[string]float64 {
	fh, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer fh.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 2 && fields[1] == "kB" {
			n, _ := strconv.ParseFloat(fields[0], 64)
			out[k] = n
		}
	}
	return out
}

type mapping struct {
	path      string
	size, rss float64 // kB
}

func smaps(b *testing.B, pid int) []mapping {
	fh, err := os.Open(fmt.Sprintf("/proc/%d/smaps", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer fh.Close()
	var out []mapping
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			m := mapping{}
			if len(fields) >= 6 {
				m.path = fields[5]
			}
			out = append(out, m)
			continue
		}
		if len(out) == 0 || len(fields) != 3 {
			continue
		}
		n, _ := strconv.ParseFloat(fields[1], 64)
		switch fields[0] {
		case "Size:":
			out[len(out)-1].size = n
		case "Rss:":
			out[len(out)-1].rss = n
		}
	}
	return out
}

func hostTSCkHz() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for l := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			if mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				return int(mhz * 1000)
			}
		}
	}
	return 0
}
