//go:build linux

package vmtest

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/vmcompose/vmcompose/vm/initramfs"
	"github.com/vmcompose/vmcompose/vm/kernel"
)

func jsonMarshal(v any) ([]byte, error)   { return json.Marshal(v) }
func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// Modules are the kernel modules testinit loads at boot: virtio over MMIO,
// disks, the agent port, and the ACPI power button as an input device.
var Modules = []string{"virtio_mmio", "virtio_blk", "virtio_console", "button", "evdev"}

// OnDemand are the modules testinit loads only when a device wants them:
// virtiofs, for shares.
var OnDemand = []string{"virtiofs"}

var (
	buildMu   sync.Mutex
	buildBins = map[string]string{}
)

// CacheDir is where test guests' files are kept between test runs
// (<user cache>/vmcompose-test): built binaries and content-addressed
// initramfs images, so that no run leaves files in /tmp.
func CacheDir(t testing.TB) string {
	t.Helper()
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	dir = filepath.Join(dir, "vmcompose-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// GoBuild builds the Go command pkg static for the host's architecture
// into CacheDir as name (once per test binary; atomically, so that
// concurrent test binaries do not see half a file) and returns its path.
func GoBuild(t testing.TB, pkg, name string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := buildBins[pkg]; ok {
		return p
	}
	dst := filepath.Join(CacheDir(t), name)
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+name+".tmp-")
	if err != nil {
		t.Fatal(err)
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	cmd := exec.Command("go", "build", "-trimpath", "-o", tmp.Name(), pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v: %s", pkg, err, out)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		t.Fatal(err)
	}
	buildBins[pkg] = dst
	return dst
}

// Init builds testinit and returns its path.
func Init(t testing.TB) string {
	t.Helper()
	return GoBuild(t, "github.com/vmcompose/vmcompose/vm/vmtest/testinit", "testinit")
}

// Initramfs returns an initramfs for k with testinit as /init, Modules and
// OnDemand.
func Initramfs(t testing.TB, k *kernel.Kernel) string {
	t.Helper()
	p, err := initramfs.Build(context.Background(), k, Init(t), filepath.Join(CacheDir(t), "initramfs"), initramfs.WithModules(Modules...), initramfs.WithOnDemand(OnDemand...))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// Processes returns the pids of processes whose command line contains name
// and whose working directory or command line mentions dir.
func Processes(name, dir string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		cmdline := strings.ReplaceAll(string(b), "\x00", " ")
		if !strings.Contains(cmdline, name) {
			continue
		}
		if stat, _ := os.ReadFile("/proc/" + e.Name() + "/stat"); strings.Contains(string(stat), ") Z ") {
			continue // ended, waiting to be reaped
		}
		cwd, _ := os.Readlink("/proc/" + e.Name() + "/cwd")
		if strings.HasPrefix(cwd, dir) || strings.Contains(cmdline, dir) {
			pids = append(pids, pid)
		}
	}
	return pids
}
