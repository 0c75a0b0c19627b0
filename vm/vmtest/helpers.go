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

// Modules are the kernel modules testinit needs: virtio over MMIO, disks,
// the agent port, and the ACPI power button as an input device.
var Modules = []string{"virtio_mmio", "virtio_blk", "virtio_console", "button", "evdev"}

var (
	buildOnce sync.Once
	buildDir  string
	buildBin  string
	buildErr  error
)

// Init builds testinit (static, for the host's architecture) once per test
// binary and returns its path.
func Init(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "vmtest-")
		if buildErr != nil {
			return
		}
		buildBin = filepath.Join(buildDir, "testinit")
		cmd := exec.Command("go", "build", "-trimpath", "-o", buildBin, "github.com/vmcompose/vmcompose/vm/vmtest/testinit")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = &buildError{err: err, out: string(out)}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildBin
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return "building testinit: " + e.err.Error() + ": " + e.out }

// Initramfs returns an initramfs for k with testinit as /init and Modules,
// built into the test's temporary directory.
func Initramfs(t testing.TB, k *kernel.Kernel) string {
	t.Helper()
	p, err := initramfs.Build(context.Background(), k, Init(t), t.TempDir(), initramfs.WithModules(Modules...))
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
