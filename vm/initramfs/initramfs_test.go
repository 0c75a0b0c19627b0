package initramfs_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testenv"
	"github.com/vmcompose/vmcompose/vm/initramfs"
	"github.com/vmcompose/vmcompose/vm/initramfs/modload"
	"github.com/vmcompose/vmcompose/vm/kernel"
	"github.com/vmcompose/vmcompose/vm/kernel/kerneltest"
)

var (
	initOnce sync.Once
	initPath string
	initErr  error
	initDir  string
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "initramfs-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	initDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testInit builds testdata/testinit as a static binary.
func testInit(t testing.TB) string {
	t.Helper()
	initOnce.Do(func() {
		initPath = filepath.Join(initDir, "testinit")
		cmd := exec.Command("go", "build", "-trimpath", "-o", initPath, "./testdata/testinit")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			initErr = fmt.Errorf("building testinit: %v: %s", err, out)
		}
	})
	if initErr != nil {
		t.Fatal(initErr)
	}
	return initPath
}

func TestBuildIsCachedAndReadable(t *testing.T) {
	k := kerneltest.Kernel(t)
	cache := t.TempDir()
	ctx := context.Background()
	p, err := initramfs.Build(ctx, k, testInit(t), cache)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Dir(p) != cache || !strings.HasSuffix(p, ".cpio") {
		t.Errorf("Build returned %s, want a .cpio in %s", p, cache)
	}
	old := time.Unix(1_000_000_000, 0)
	if err := os.Chtimes(p, old, old); err != nil {
		t.Fatal(err)
	}
	p2, err := initramfs.Build(ctx, k, testInit(t), cache)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p2); p2 != p || err != nil || !fi.ModTime().Equal(old) {
		t.Errorf("second Build: %s (%v), want %s untouched", p2, err, p)
	}
	entries, _ := os.ReadDir(cache)
	for _, e := range entries {
		if e.Name() != filepath.Base(p) && e.Name() != ".lock" {
			t.Errorf("cache holds %s", e.Name())
		}
	}

	// A different module set is a different archive.
	p3, err := initramfs.Build(ctx, k, testInit(t), cache, initramfs.WithModules("virtio_blk"))
	if err != nil {
		t.Fatal(err)
	}
	if p3 == p {
		t.Error("Build with other modules returned the same archive")
	}
	if err := initramfs.Prune(ctx, cache, p); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p3); !os.IsNotExist(err) {
		t.Errorf("Prune left %s: %v", p3, err)
	}
	if _, err := os.Stat(p); err != nil {
		t.Errorf("Prune removed the archive to keep: %v", err)
	}
	if err := initramfs.Prune(ctx, filepath.Join(cache, "none")); err != nil {
		t.Errorf("Prune of a missing cache: %v", err)
	}

	// Read it back with cpio(1).
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("no cpio on this host")
	}
	mods, err := k.Resolve(kernel.GuestModules, true)
	if err != nil {
		t.Fatal(err)
	}
	list := cpioList(t, p)
	want := map[string]string{
		"init":                     "-rwxr-xr-x",
		"dev":                      "drwxr-xr-x",
		"dev/console":              "crw-------",
		"proc":                     "drwxr-xr-x",
		"sys":                      "drwxr-xr-x",
		"etc/vmcompose/modules":    "-rw-r--r--",
		"lib/modules/" + k.Version: "drwxr-xr-x",
	}
	for _, m := range mods {
		want["lib/modules/"+k.Version+"/"+m.Path] = "-rw-r--r--"
	}
	for name, mode := range want {
		if got, ok := list[name]; !ok {
			t.Errorf("archive lacks %s", name)
		} else if got != mode {
			t.Errorf("%s has mode %s, want %s", name, got, mode)
		}
	}
	var files int
	for name, mode := range list {
		if mode[0] == '-' {
			files++
			if _, ok := want[name]; !ok {
				t.Errorf("archive has unexpected file %s", name)
			}
		}
	}

	// The manifest lists the resolved modules, in order.
	got := cpioExtract(t, p, "etc/vmcompose/modules")
	paths, err := modload.Parse(bytes.NewReader(got))
	if err != nil {
		t.Fatal(err)
	}
	var wantPaths []string
	for _, m := range mods {
		wantPaths = append(wantPaths, "/lib/modules/"+k.Version+"/"+m.Path)
	}
	if !slices.Equal(paths, wantPaths) {
		t.Errorf("manifest:\n%s\nwant %v", got, wantPaths)
	}
	if b := cpioExtract(t, p, "init"); !bytes.Equal(b, mustRead(t, testInit(t))) {
		t.Error("/init differs from the init binary")
	}

	// Signatures are stripped unless asked for.
	const magic = "~Module signature appended~\n"
	blk := mods[slices.IndexFunc(mods, func(m kernel.Module) bool { return m.Name == "virtio_blk" })]
	orig := mustRead(t, filepath.Join(k.ModulesDir, blk.Path))
	if !bytes.HasSuffix(orig, []byte(magic)) {
		t.Skipf("%s is not signed", blk.Path)
	}
	inArchive := cpioExtract(t, p, "lib/modules/"+k.Version+"/"+blk.Path)
	if bytes.HasSuffix(inArchive, []byte(magic)) || !bytes.HasPrefix(orig, inArchive) || len(inArchive) < len(orig)-4096 {
		t.Errorf("virtio_blk in the archive: %d bytes, the signed original %d", len(inArchive), len(orig))
	}
	signed, err := initramfs.Build(ctx, k, testInit(t), cache, initramfs.WithModuleSignatures())
	if err != nil {
		t.Fatal(err)
	}
	if b := cpioExtract(t, signed, "lib/modules/"+k.Version+"/"+blk.Path); !bytes.Equal(b, orig) {
		t.Error("WithModuleSignatures: virtio_blk differs from the original")
	}
}

// TestOnDemand packs modules that only some devices want outside the boot
// manifest, under the device patterns of their .modinfo.
func TestOnDemand(t *testing.T) {
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("no cpio on this host")
	}
	k := kerneltest.Kernel(t)
	p, err := initramfs.Build(context.Background(), k, testInit(t), t.TempDir(),
		initramfs.WithModules("virtio_mmio", "virtio_blk"),
		initramfs.WithOnDemand("virtio_net", "virtiofs", "virtio_blk"))
	if err != nil {
		t.Fatal(err)
	}
	boot, err := modload.Parse(bytes.NewReader(cpioExtract(t, p, "etc/vmcompose/modules")))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := modload.ParseOnDemand(bytes.NewReader(cpioExtract(t, p, "etc/vmcompose/modules.ondemand")))
	if err != nil {
		t.Fatal(err)
	}
	names := func(paths []string) (out []string) {
		for _, p := range paths {
			out = append(out, modload.Name(p))
		}
		return out
	}
	if got := names(boot); slices.Contains(got, "virtio_net") || !slices.Contains(got, "virtio_blk") {
		t.Errorf("boot manifest: %q", got)
	}
	// A NIC wants virtio_net after what it needs beyond the boot modules
	// (virtio and virtio_ring come with virtio_mmio at boot); a virtiofs
	// device wants fuse and virtiofs; virtio_blk loads at boot already.
	for _, c := range []struct{ modalias, want string }{
		{"virtio:d00000001v00001AF4", "failover net_failover virtio_net"},
		{"virtio:d0000001Av00001AF4", "fuse virtiofs"},
		{"virtio:d00000002v00001AF4", ""},
	} {
		paths := modload.Match(rules, []string{c.modalias})
		if got := strings.Join(names(paths), " "); got != c.want {
			t.Errorf("modules for %s: %q, want %q", c.modalias, got, c.want)
		}
		list := cpioList(t, p)
		for _, mp := range paths {
			if _, ok := list[strings.TrimPrefix(mp, "/")]; !ok {
				t.Errorf("%s is not in the archive", mp)
			}
		}
	}
}

func TestBuildRefusesDynamicInit(t *testing.T) {
	k := &kernel.Kernel{Version: "test"}
	_, err := initramfs.Build(context.Background(), k, "/bin/sh", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "dynamically linked: build it with CGO_ENABLED=0") {
		t.Errorf("Build with /bin/sh as init: %v", err)
	}
}

func TestBuildGzip(t *testing.T) {
	k := kerneltest.Kernel(t)
	p, err := initramfs.Build(context.Background(), k, testInit(t), t.TempDir(), initramfs.WithCompression(initramfs.Gzip))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(p, ".cpio.gz") {
		t.Errorf("gzip archive named %s", p)
	}
	b := mustRead(t, p)
	if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
		t.Errorf("%s is not gzip", p)
	}
}

func TestConcurrentBuilds(t *testing.T) {
	k := kerneltest.Kernel(t)
	cache := t.TempDir()
	init := testInit(t)
	var wg sync.WaitGroup
	paths := make([]string, 4)
	errs := make([]error, 4)
	for i := range paths {
		wg.Go(func() { paths[i], errs[i] = initramfs.Build(context.Background(), k, init, cache) })
	}
	wg.Wait()
	for i := range paths {
		if errs[i] != nil || paths[i] != paths[0] {
			t.Errorf("build %d: %s, %v", i, paths[i], errs[i])
		}
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cpioList returns the archive's names and their ls-style modes.
func cpioList(t *testing.T, archive string) map[string]string {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("cpio", "-itv", "--quiet")
	cmd.Stdin = f
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -itv: %v", err)
	}
	list := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 9 {
			t.Fatalf("cpio line %q", sc.Text())
		}
		list[fields[len(fields)-1]] = fields[0]
	}
	return list
}

func cpioExtract(t *testing.T, archive, name string) []byte {
	t.Helper()
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("cpio", "-i", "--to-stdout", "--quiet", name)
	cmd.Stdin = f
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cpio -i %s: %v", name, err)
	}
	return out
}

// hostTSCkHz reads the host's TSC frequency for tsc_early_khz: without it
// a microvm guest under TCG sometimes hangs calibrating its TSC.
func hostTSCkHz(t testing.TB) int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err == nil {
				return int(mhz * 1000)
			}
		}
	}
	t.Fatal("no cpu MHz in /proc/cpuinfo")
	return 0
}

func qemuBinary(t testing.TB) string {
	q := testenv.LookPath(t, "qemu-system-x86_64", "scripts/setup installs it")
	if runtime.GOARCH != "amd64" {
		t.Skip("the boot test knows only x86-64 guests")
	}
	return q
}

// bootArgs returns the QEMU arguments that boot k with initrd on a microvm
// machine, a read-only virtio disk and a virtio-serial port, the console on
// standard output.
func bootArgs(t testing.TB, k *kernel.Kernel, initrd, disk, extra string) []string {
	// TCG by default: it works everywhere, and some hosts have a /dev/kvm
	// that fails the guest with an emulation failure.
	accel := "tcg"
	if a := os.Getenv("VMCOMPOSE_TEST_ACCEL"); a != "" {
		accel = a
	}
	cmdline := fmt.Sprintf("console=ttyS0 quiet tsc_early_khz=%d tsc=reliable pci=off cryptomgr.notests "+
		"initcall_blacklist=init_kprobe_trace,crypto_kdf108_init %s", hostTSCkHz(t), extra)
	return []string{
		"-M", "microvm", "-accel", accel, "-m", "256", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-global", "virtio-mmio.force-legacy=false",
		"-kernel", k.Image, "-initrd", initrd, "-append", cmdline,
		"-serial", "stdio",
		"-drive", "if=none,id=disk0,format=raw,readonly=on,file=" + disk,
		"-device", "virtio-blk-device,drive=disk0,serial=test0",
		"-device", "virtio-serial-device",
		"-chardev", "null,id=agent",
		"-device", "virtserialport,chardev=agent,name=vmcompose.agent",
	}
}

// boot runs the guest to its power-off and returns its console output and
// the wall time.
func boot(t testing.TB, args []string) (string, time.Duration) {
	out, wall, _ := bootCPU(t, args)
	return out, wall
}

// bootCPU is boot that also returns the CPU time QEMU used, which depends
// less than the wall time on what else the host runs.
func bootCPU(t testing.TB, args []string) (string, time.Duration, time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemuBinary(t), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("the guest did not power off within 60s; console:\n%s", out.String())
	}
	if err != nil {
		t.Fatalf("qemu: %v; output:\n%s", err, out.String())
	}
	return out.String(), d, cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

func TestBootLoadsModules(t *testing.T) {
	qemuBinary(t)
	k := kerneltest.Kernel(t)
	initrd, err := initramfs.Build(context.Background(), k, testInit(t), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	args := bootArgs(t, k, initrd, disk, "TESTINIT_EXPECT=/sys/block/vda,/sys/class/virtio-ports/vport*,/sys/class/input/event*")
	out, d := boot(t, args)
	if !strings.Contains(out, "TESTINIT OK") {
		t.Fatalf("no TESTINIT OK marker; console:\n%s", out)
	}
	mods, err := k.Resolve(kernel.GuestModules, true)
	if err != nil {
		t.Fatal(err)
	}
	var loaded []string
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == "TESTINIT" && f[1] == "loaded" {
			loaded = append(loaded, f[2])
		}
	}
	var want []string
	for _, m := range mods {
		want = append(want, m.Name)
	}
	if !slices.Equal(loaded, want) {
		t.Errorf("loaded %v\nwant   %v", loaded, want)
	}
	for _, dev := range []string{"/sys/block/vda", "/sys/class/virtio-ports/vport*", "/sys/class/input/event*"} {
		if !strings.Contains(out, "TESTINIT found "+dev) {
			t.Errorf("the guest did not find %s", dev)
		}
	}
	if testing.Verbose() {
		t.Logf("console:\n%s", out)
	}
	t.Logf("boot to power-off %v; qemu %s", d.Round(time.Millisecond), strings.Join(args, " "))
}

// TestBootTimes compares boot-to-power-off wall times of an uncompressed
// and a gzip archive. It runs only when VMCOMPOSE_BOOT_TIMES gives the
// number of boots of each.
func TestBootTimes(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("VMCOMPOSE_BOOT_TIMES"))
	if n <= 0 {
		t.Skip("set VMCOMPOSE_BOOT_TIMES=N to measure N boots of each archive kind")
	}
	qemuBinary(t)
	k := kerneltest.Kernel(t)
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	type variant struct {
		name, image, initrd string
		times, cpu          []time.Duration
	}
	var vs []*variant
	for _, c := range []initramfs.Compression{initramfs.None, initramfs.Gzip} {
		initrd, err := initramfs.Build(context.Background(), k, testInit(t), t.TempDir(), initramfs.WithCompression(c))
		if err != nil {
			t.Fatal(err)
		}
		fi, _ := os.Stat(initrd)
		name := fmt.Sprintf("%s (%d bytes)", filepath.Base(initrd), fi.Size())
		vs = append(vs, &variant{name: "vmlinux, " + name, image: k.Image, initrd: initrd})
		if k.BzImage != "" && c == initramfs.None {
			vs = append(vs, &variant{name: "bzImage, " + name, image: k.BzImage, initrd: initrd})
		}
	}
	signed, err := initramfs.Build(context.Background(), k, testInit(t), t.TempDir(), initramfs.WithModuleSignatures())
	if err != nil {
		t.Fatal(err)
	}
	vs = append(vs, &variant{name: "vmlinux, signed modules, " + filepath.Base(signed), image: k.Image, initrd: signed})
	// Interleaved, so that a change in the host's load hits all alike.
	for range n {
		for _, v := range vs {
			kk := *k
			kk.Image = v.image
			out, d, cpu := bootCPU(t, bootArgs(t, &kk, v.initrd, disk, ""))
			if !strings.Contains(out, "TESTINIT OK") {
				t.Fatalf("no marker; console:\n%s", out)
			}
			v.times = append(v.times, d)
			v.cpu = append(v.cpu, cpu)
		}
	}
	for _, v := range vs {
		slices.Sort(v.times)
		slices.Sort(v.cpu)
		t.Logf("%s: wall median %v min %v, QEMU CPU median %v min %v",
			v.name, v.times[len(v.times)/2].Round(time.Millisecond), v.times[0].Round(time.Millisecond),
			v.cpu[len(v.cpu)/2].Round(time.Millisecond), v.cpu[0].Round(time.Millisecond))
	}
}
