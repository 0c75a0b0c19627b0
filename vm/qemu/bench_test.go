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
		t := runTrue(b, d, f.serviceSpec(name), nil)
		b.Logf("run %d: qemu spawned %v, agent up and service started %v, VM exited %v, removed %v", i, t.spawned, t.up, t.exited, t.removed)
		return t.removed
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

	mem := idleMemory(b, d, f.serviceSpec("idle"), nil)
	b.ReportMetric(mem.rss, "idle-rss-MiB")
	b.ReportMetric(mem.pss, "idle-pss-MiB")
	b.ReportMetric(mem.guest, "idle-guest-touched-MiB")
	b.ReportMetric(mem.tcg, "idle-tcg-MiB")
	b.Logf("idle 256 MiB service: qemu Rss %.1f MiB, Pss %.1f MiB; guest RAM touched %.1f MiB, TCG code buffer %.1f MiB, kernel and initramfs file mappings %.1f + %.1f MiB (page cache, shared by VMs)",
		mem.rss, mem.pss, mem.guest, mem.tcg, mem.kernel, mem.initrd)
}

// runTimes are the moments of one runTrue, from its start.
type runTimes struct {
	spawned, up, exited, removed time.Duration
}

// runTrue creates and starts sp, runs `true` as its service with mounts,
// waits for the VM to power off and removes it: `vmcompose run --rm svc
// true` on an already-pulled image.
func runTrue(b *testing.B, d *qemu.Driver, sp vm.Spec, mounts []agent.Mount) runTimes {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var t runTimes
	t0 := time.Now()
	if err := d.Create(ctx, sp); err != nil {
		b.Fatal(err)
	}
	if err := d.Start(ctx, sp.Name); err != nil {
		b.Fatal(err)
	}
	st, err := d.Inspect(ctx, sp.Name)
	if err != nil {
		b.Fatal(err)
	}
	c, err := agent.DialSocket(ctx, st.Agent)
	if err != nil {
		b.Fatal(err)
	}
	if err := c.Start(ctx, agent.Spec{Command: []string{"true"}, Mounts: mounts}); err != nil {
		b.Fatal(err)
	}
	t.spawned, t.up = st.StartedAt.Sub(t0), time.Since(t0)
	exit, err := c.Wait(ctx)
	if err != nil || exit.Code != 0 {
		b.Fatalf("service true: %+v, %v", exit, err)
	}
	c.Close()
	if st, err := vm.Wait(ctx, d, sp.Name); err != nil || st.State != vm.StateExited {
		b.Fatalf("VM after the service exited: %+v, %v", st, err)
	}
	t.exited = time.Since(t0)
	if err := d.Remove(ctx, sp.Name); err != nil {
		b.Fatal(err)
	}
	t.removed = time.Since(t0)
	return t
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

type memFigures struct {
	rss, pss, guest, tcg, kernel, initrd float64 // MiB
	// helperRSS and helperPSS add up the VM's virtiofsd processes.
	helperRSS, helperPSS float64
}

// idleMemory starts sp (a service VM with a 256 MiB guest) whose service,
// with mounts, sleeps, lets it settle, and reads the memory of its qemu
// and its virtiofsd processes.
func idleMemory(b *testing.B, d *qemu.Driver, sp vm.Spec, mounts []agent.Mount) memFigures {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := d.Create(ctx, sp); err != nil {
		b.Fatal(err)
	}
	defer d.Remove(context.Background(), sp.Name)
	defer d.Kill(context.Background(), sp.Name)
	if err := d.Start(ctx, sp.Name); err != nil {
		b.Fatal(err)
	}
	st, err := d.Inspect(ctx, sp.Name)
	if err != nil {
		b.Fatal(err)
	}
	c, err := agent.DialSocket(ctx, st.Agent)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if err := c.Start(ctx, agent.Spec{Command: []string{"sleep", "3600"}, Mounts: mounts}); err != nil {
		b.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	var m memFigures
	rollup := readKB(b, fmt.Sprintf("/proc/%d/smaps_rollup", st.Pid))
	m.rss, m.pss = rollup["Rss"]/1024, rollup["Pss"]/1024
	for _, pid := range vmtest.Processes("virtiofsd", filepath.Join(d.Root(), sp.Name)+"/") {
		r := readKB(b, fmt.Sprintf("/proc/%d/smaps_rollup", pid))
		m.helperRSS += r["Rss"] / 1024
		m.helperPSS += r["Pss"] / 1024
	}
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

// BenchmarkShare compares, interleaved in the same run, the service VM of
// BenchmarkBoot (Create, Start, the agent's Start of `true`, its exit,
// power-off, Remove) without a share and with one bind mount: a host
// directory served by virtiofsd, the virtiofs modules the guest then loads
// on demand, and the mount vminit makes. Both boot the same initramfs, as
// reconcile builds it. It reports both medians, their difference, and the
// host memory of an idle service VM with and without the share: qemu's
// Rss and Pss, and its virtiofsd processes' (which map the guest's
// memory, so Pss is the fair sum).
func BenchmarkShare(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("QEMU's virtiofsd needs root")
	}
	f := realGuest(b)
	k := kerneltest.Kernel(b)
	ctx := context.Background()
	bin := vmtest.GoBuild(b, "github.com/vmcompose/vmcompose/cmd/vminit", "vminit")
	initrd, err := initramfs.Build(ctx, k, bin, filepath.Join(vmtest.CacheDir(b), "initramfs"),
		initramfs.WithModules("virtio_mmio", "virtio_blk", "virtio_console", "overlay", "button", "evdev"),
		initramfs.WithOnDemand("virtio_net", "virtiofs"))
	if err != nil {
		b.Fatal(err)
	}
	src := b.TempDir()
	os.WriteFile(filepath.Join(src, "index.html"), []byte("hello\n"), 0o644)
	d, err := qemu.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	spec := func(name string, share bool) (vm.Spec, []agent.Mount) {
		sp := f.serviceSpec(name)
		sp.Initramfs = initrd
		if !share {
			return sp, nil
		}
		sp.Shares = []vm.Share{{Tag: "bind0", Source: src}}
		return sp, []agent.Mount{{Type: agent.MountVirtiofs, Source: "bind0", Target: "/srv"}}
	}
	// run returns when the service ran (the agent's Start returned, the
	// mounts made) and when the VM was gone.
	run := func(name string, share bool) (up, total time.Duration) {
		sp, mounts := spec(name, share)
		t := runTrue(b, d, sp, mounts)
		return t.up, t.removed
	}
	run("warm-plain", false)
	run("warm-share", true)
	var plainUp, shareUp, plain, shared []time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		// Alternate which goes first, so that neither always follows
		// the other's teardown.
		order := []bool{false, true}
		if i%2 == 1 {
			order = []bool{true, false}
		}
		for _, share := range order {
			if share {
				u, t := run(fmt.Sprintf("share-%d", i), true)
				shareUp, shared = append(shareUp, u), append(shared, t)
			} else {
				u, t := run(fmt.Sprintf("plain-%d", i), false)
				plainUp, plain = append(plainUp, u), append(plain, t)
			}
		}
	}
	b.StopTimer()
	b.ReportMetric(median(plainUp).Seconds(), "plain-up-s")
	b.ReportMetric(median(shareUp).Seconds(), "share-up-s")
	b.ReportMetric((median(shareUp) - median(plainUp)).Seconds(), "extra-up-s")
	b.ReportMetric((median(shared) - median(plain)).Seconds(), "extra-total-s")
	b.Logf("service up: without a share %v, with one %v (medians of %d; fastest %v and %v)",
		median(plainUp), median(shareUp), len(plainUp), slices.Min(plainUp), slices.Min(shareUp))
	b.Logf("to the VM removed: without a share %v, with one %v (fastest %v and %v)",
		median(plain), median(shared), slices.Min(plain), slices.Min(shared))

	sp, _ := spec("idle-plain", false)
	without := idleMemory(b, d, sp, nil)
	sp, mounts := spec("idle-share", true)
	with := idleMemory(b, d, sp, mounts)
	b.ReportMetric(without.pss, "idle-pss-MiB")
	b.ReportMetric(with.pss+with.helperPSS, "idle-share-pss-MiB")
	b.Logf("idle 256 MiB service without a share: qemu Rss %.1f MiB, Pss %.1f MiB", without.rss, without.pss)
	b.Logf("idle 256 MiB service with one share: qemu Rss %.1f MiB, Pss %.1f MiB; virtiofsd Rss %.1f MiB, Pss %.1f MiB",
		with.rss, with.pss, with.helperRSS, with.helperPSS)
}
