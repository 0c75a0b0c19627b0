package kernel_test

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/vm/kernel"
	"github.com/vmcompose/vmcompose/vm/kernel/kerneltest"
)

func TestFindWithoutKernelSaysHowToGetOne(t *testing.T) {
	t.Setenv(kernel.EnvKernel, "")
	store := t.TempDir()
	_, err := kernel.Find(store)
	if !errors.Is(err, kernel.ErrNotFound) {
		t.Fatalf("Find in an empty store: %v, want ErrNotFound", err)
	}
	want := "no guest kernel for amd64 in " + filepath.Join(store, "kernel") +
		": run `vmcompose setup` (or `go run ./scripts/fetch-kernel` in a vmcompose checkout) to fetch Debian's cloud kernel into the store," +
		" or set VMCOMPOSE_KERNEL to a kernel image (a PVH vmlinux or bzImage) and VMCOMPOSE_KERNEL_MODULES to its lib/modules/<version> directory"
	if got := err.Error(); strings.Replace(got, "for arm64", "for amd64", 1) != want {
		t.Errorf("error:\n got %s\nwant %s", got, want)
	}

	// An interrupted fetch leaves a directory without kernel.json: still
	// no kernel.
	if err := os.MkdirAll(filepath.Join(store, "kernel", "6.1.0-1-cloud-amd64", "lib"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := kernel.Find(store); !errors.Is(err, kernel.ErrNotFound) {
		t.Errorf("Find with an incomplete kernel directory: %v, want ErrNotFound", err)
	}
}

func TestFindPicksNewestAndHonoursEnv(t *testing.T) {
	img := kerneltest.Kernel(t).Image // before the test changes the environment
	store := t.TempDir()
	for _, v := range []string{"6.1.0-9-cloud-amd64", "6.1.0-56-cloud-amd64", "6.1.0-10-cloud-amd64"} {
		fakeKernel(t, filepath.Join(store, "kernel", v), v)
	}
	t.Setenv(kernel.EnvKernel, "")
	k, err := kernel.Find(store)
	if err != nil {
		t.Fatal(err)
	}
	if k.Version != "6.1.0-56-cloud-amd64" {
		t.Errorf("Find picked %s, want the newest, 6.1.0-56-cloud-amd64", k.Version)
	}

	t.Setenv(kernel.EnvKernel, "6.1.0-9-cloud-amd64")
	if k, err = kernel.Find(store); err != nil || k.Version != "6.1.0-9-cloud-amd64" {
		t.Errorf("Find with %s naming a stored version: %v, %v", kernel.EnvKernel, k, err)
	}

	notPVH := filepath.Join(t.TempDir(), "vmlinux")
	if err := os.WriteFile(notPVH, []byte("\x7fELF\x02\x01\x01"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(kernel.EnvKernel, notPVH)
	if _, err := kernel.Find(store); err == nil || !strings.Contains(err.Error(), "(use the bzImage instead)") {
		t.Errorf("Find with a vmlinux that is not PVH-bootable: %v", err)
	}

	mods := filepath.Join(t.TempDir(), "lib", "modules", "6.9.0-custom")
	if err := os.MkdirAll(mods, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv(kernel.EnvKernel, img)
	t.Setenv(kernel.EnvKernelModules, mods)
	k, err = kernel.Find(store)
	if err != nil {
		t.Fatal(err)
	}
	if k.Image != img || k.ModulesDir != mods || k.Version != "6.9.0-custom" || k.Source != "env:VMCOMPOSE_KERNEL" {
		t.Errorf("Find with an image in the environment: %+v", k)
	}

	t.Setenv(kernel.EnvKernel, filepath.Join(store, "nothing"))
	if _, err := kernel.Find(store); err == nil || !strings.Contains(err.Error(), "VMCOMPOSE_KERNEL=") {
		t.Errorf("Find with a missing file in the environment: %v", err)
	}
}

func fakeKernel(t *testing.T, dir, version string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vmlinux"), []byte("\x7fELF"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := `{"version":"` + version + `","arch":"amd64","image":"vmlinux"}`
	if err := os.WriteFile(filepath.Join(dir, "kernel.json"), []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestOpenDirRefusesPathsOutside(t *testing.T) {
	dir := t.TempDir()
	m := `{"version":"1","arch":"amd64","image":"../../etc/passwd"}`
	if err := os.WriteFile(filepath.Join(dir, "kernel.json"), []byte(m), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := kernel.OpenDir(dir); err == nil || !strings.Contains(err.Error(), "not a path inside the directory") {
		t.Errorf("OpenDir with an escaping image path: %v", err)
	}
}

func TestCompareVersions(t *testing.T) {
	in := []string{"6.1.0-56-cloud-amd64", "6.1.0-9-cloud-amd64", "6.10.0-1-cloud-amd64", "6.1.0-10-cloud-amd64", "5.10.0-30-cloud-amd64"}
	slices.SortFunc(in, kernel.CompareVersions)
	want := []string{"5.10.0-30-cloud-amd64", "6.1.0-9-cloud-amd64", "6.1.0-10-cloud-amd64", "6.1.0-56-cloud-amd64", "6.10.0-1-cloud-amd64"}
	if !slices.Equal(in, want) {
		t.Errorf("sorted: %v\nwant    %v", in, want)
	}
}

func TestStoreKernel(t *testing.T) {
	k := kerneltest.Kernel(t)
	if err := kernel.CheckPVH(k.Image); err != nil {
		t.Error(err)
	}
	cfg, err := k.Config()
	if err != nil {
		t.Fatal(err)
	}
	for sym, want := range map[string]string{"CONFIG_PVH": "y", "CONFIG_EXT4_FS": "y", "CONFIG_VIRTIO_BLK": "m", "CONFIG_BLK_DEV_INITRD": "y"} {
		if cfg[sym] != want {
			t.Errorf("%s=%q, want %q", sym, cfg[sym], want)
		}
	}

	// Extracting again gives the same bytes.
	if k.BzImage != "" {
		out := filepath.Join(t.TempDir(), "vmlinux")
		if err := kernel.ExtractVmlinux(k.BzImage, out); err != nil {
			t.Fatal(err)
		}
		a, _ := os.Stat(out)
		b, _ := os.Stat(k.Image)
		if a.Size() != b.Size() {
			t.Errorf("re-extracted vmlinux has %d bytes, the store's %d", a.Size(), b.Size())
		}
	}
	if k.BzImage != "" {
		bz, err := kernel.Open(k.BzImage, "")
		if err != nil {
			t.Fatal(err)
		}
		if bz.Version != k.Version || bz.BzImage != k.BzImage || bz.ModulesDir != "" {
			t.Errorf("Open of the bzImage: %+v, want version %s", bz, k.Version)
		}
		if err := kernel.CheckPVH(k.BzImage); err == nil {
			t.Error("CheckPVH accepts a bzImage")
		}
	}
	if err := kernel.CheckPVH(k.ConfigFile); err == nil {
		t.Error("CheckPVH accepts a text file")
	}
	if err := kernel.ExtractVmlinux(k.ConfigFile, filepath.Join(t.TempDir(), "x")); err == nil || !strings.Contains(err.Error(), "not a bzImage") {
		t.Errorf("ExtractVmlinux of a text file: %v", err)
	}
}

func TestResolveOrdersDependenciesFirst(t *testing.T) {
	k := kerneltest.Kernel(t)
	mods, err := k.Resolve(kernel.GuestModules, true)
	if err != nil {
		t.Fatal(err)
	}
	pos := map[string]int{}
	for i, m := range mods {
		pos[m.Name] = i
	}
	for _, m := range mods {
		for _, d := range m.Depends {
			if p, ok := pos[d]; !ok || p > pos[m.Name] {
				t.Errorf("%s needs %s, which comes at %d, after it (%d) or not at all", m.Name, d, p, pos[m.Name])
			}
		}
		if _, err := os.Stat(filepath.Join(k.ModulesDir, m.Path)); err != nil {
			t.Error(err)
		}
	}
	for _, n := range []string{"virtio", "virtio_ring", "virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "overlay", "virtiofs", "vsock"} {
		if _, ok := pos[n]; !ok {
			t.Errorf("%s missing from %v", n, mods)
		}
	}
	if _, ok := pos["ext4"]; ok {
		t.Error("ext4 is built into the cloud kernel but was resolved as a module")
	}
	if _, err := k.Resolve([]string{"virtio_blk", "no_such_module"}, false); !errors.Is(err, kernel.ErrModuleNotFound) || !strings.Contains(err.Error(), "no_such_module") {
		t.Errorf("Resolve of a missing module: %v", err)
	}
}

// TestModulesDepMatchesDepmod checks the Go resolver against depmod.
func TestModulesDepMatchesDepmod(t *testing.T) {
	depmod, err := exec.LookPath("depmod")
	if err != nil {
		t.Skip("no depmod on this host")
	}
	k := kerneltest.Kernel(t)
	ours, err := kernel.ScanModules(k.ModulesDir)
	if err != nil {
		t.Fatal(err)
	}
	base := t.TempDir()
	dst := filepath.Join(base, "lib", "modules", k.Version)
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("cp", "-rs", k.ModulesDir, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v: %s", err, out)
	}
	os.Remove(filepath.Join(dst, "modules.dep"))
	if out, err := exec.Command(depmod, "-b", base, k.Version).CombinedOutput(); err != nil {
		t.Fatalf("depmod: %v: %s", err, out)
	}
	theirs := &kernel.Kernel{Version: k.Version, ModulesDir: dst}
	all := make([]string, 0, len(ours))
	for n := range ours {
		all = append(all, n)
	}
	got, err := theirs.Resolve(all, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(ours) {
		t.Errorf("depmod knows %d modules, ScanModules %d", len(got), len(ours))
	}
	for _, m := range got {
		o := ours[m.Name]
		a, b := slices.Sorted(slices.Values(m.Depends)), slices.Sorted(slices.Values(o.Depends))
		if m.Path != o.Path || !slices.Equal(a, b) {
			t.Errorf("%s: depmod %s %v, ours %s %v", m.Name, m.Path, a, o.Path, b)
		}
	}
}

func TestFetchTwiceDoesNotDownload(t *testing.T) {
	k := kerneltest.Kernel(t)
	if k.Dir == "" || !strings.HasPrefix(k.Source, "debian:") {
		t.Skipf("the test kernel %s is not a fetched one", k.Image)
	}
	t.Setenv("PATH", "") // no apt-get, no dpkg
	store := filepath.Dir(filepath.Dir(k.Dir))
	got, err := kernel.Fetch(context.Background(), store, kernel.WithPackage("linux-image-"+k.Version+"-unsigned"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Dir != k.Dir {
		t.Errorf("Fetch again: %s, want %s", got.Dir, k.Dir)
	}
}

func TestFetchFailureLeavesNothing(t *testing.T) {
	if _, err := exec.LookPath("apt-get"); err != nil {
		t.Skip("no apt-get on this host")
	}
	store := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err := kernel.Fetch(ctx, store, kernel.WithPackage("linux-image-0.0.0-0-cloud-amd64"))
	if err == nil {
		t.Fatal("Fetch of a package that does not exist succeeded")
	}
	if !strings.HasPrefix(err.Error(), "fetching kernel 0.0.0-0-cloud-amd64: downloading linux-image-0.0.0-0-cloud-amd64-unsigned (run `apt-get update` if apt's package lists are old): apt-get: exit status 100: ") {
		t.Errorf("error: %v", err)
	}
	entries, _ := os.ReadDir(filepath.Join(store, "kernel"))
	for _, e := range entries {
		if e.Name() != ".lock" {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := kernel.Fetch(cancelled, store, kernel.WithPackage("linux-image-6.1.0-56-cloud-amd64")); !errors.Is(err, context.Canceled) {
		t.Errorf("Fetch with a cancelled context: %v", err)
	}
	entries, _ = os.ReadDir(filepath.Join(store, "kernel"))
	for _, e := range entries {
		if e.Name() != ".lock" {
			t.Errorf("left behind after cancelling: %s", e.Name())
		}
	}
	if _, err := kernel.Fetch(ctx, store, kernel.WithPackage("linux image")); err == nil {
		t.Error("Fetch accepts a package name with a space")
	}
}

// TestFetchWaitsForAnotherFetch holds the store's kernel lock as a running
// fetch would, lets Fetch wait on it, then completes the kernel: Fetch must
// return it without downloading (PATH is empty, so it could not).
func TestFetchWaitsForAnotherFetch(t *testing.T) {
	store := t.TempDir()
	dir := filepath.Join(store, "kernel")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", "")
	type result struct {
		k   *kernel.Kernel
		err error
	}
	done := make(chan result, 1)
	go func() {
		k, err := kernel.Fetch(context.Background(), store, kernel.WithPackage("linux-image-6.1.0-77-cloud-amd64"))
		done <- result{k, err}
	}()
	select {
	case r := <-done:
		t.Fatalf("Fetch did not wait for the lock: %v, %v", r.k, r.err)
	case <-time.After(200 * time.Millisecond):
	}
	fakeKernel(t, filepath.Join(dir, "6.1.0-77-cloud-amd64"), "6.1.0-77-cloud-amd64")
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_UN); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.k.Version != "6.1.0-77-cloud-amd64" {
		t.Errorf("Fetch after waiting: %+v, %v", r.k, r.err)
	}

	// Without apt, Fetch says what to do instead.
	_, err = kernel.Fetch(context.Background(), t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "on hosts without apt, set VMCOMPOSE_KERNEL to a kernel image") {
		t.Errorf("Fetch without apt: %v", err)
	}
}

func TestCheck(t *testing.T) {
	k := kerneltest.Kernel(t)
	if err := k.Check(); err != nil {
		t.Errorf("the store's kernel: %v", err)
	}
	noMods := *k
	noMods.ModulesDir = ""
	err := noMods.Check()
	if err == nil || !strings.Contains(err.Error(), "CONFIG_VIRTIO_BLK=y or =m (root and volume disks)") {
		t.Errorf("Check of the cloud kernel without its modules: %v", err)
	}

	cfg := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(cfg, []byte("CONFIG_BLK_DEV_INITRD=y\nCONFIG_DEVTMPFS=y\n# CONFIG_VIRTIO_MMIO is not set\nCONFIG_VIRTIO_PCI=y\n"+
		"CONFIG_VIRTIO_BLK=y\nCONFIG_VIRTIO_CONSOLE=y\nCONFIG_VIRTIO_NET=y\nCONFIG_EXT4_FS=y\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	custom := &kernel.Kernel{Version: "6.9.0-custom", Image: "/vmlinux", ConfigFile: cfg}
	want := "kernel 6.9.0-custom (" + cfg + ") lacks CONFIG_OVERLAY_FS=y or =m (the writable root), CONFIG_PVH=y (booting the vmlinux directly)"
	if err := custom.Check(); err == nil || err.Error() != want {
		t.Errorf("Check of a custom kernel:\n got %v\nwant %s", err, want)
	}
	if err := (&kernel.Kernel{Version: "x", Image: "/vmlinux"}).Check(); err != nil {
		t.Errorf("Check of a kernel without config: %v", err)
	}
}
