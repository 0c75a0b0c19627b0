//go:build linux

package qemu_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/internal/testimage"
	"github.com/vmcompose/vmcompose/oci/rootfs"
	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/vm/initramfs"
	"github.com/vmcompose/vmcompose/vm/kernel/kerneltest"
	"github.com/vmcompose/vmcompose/vm/qemu"
	"github.com/vmcompose/vmcompose/vm/vmtest"
)

// guestFixture is what a real service VM boots: the kernel, an initramfs
// with vminit and the guest modules, and a busybox image's rootfs.
type guestFixture struct {
	kernel, initrd, rootfs string
}

var (
	guestOnce sync.Once
	guestFix  guestFixture
	guestErr  error
)

func realGuest(t testing.TB) guestFixture {
	t.Helper()
	requireQEMU(t)
	k := kerneltest.Kernel(t)
	img := testimage.Busybox(t)
	guestOnce.Do(func() {
		ctx := context.Background()
		cache := vmtest.CacheDir(t)
		bin := vmtest.GoBuild(t, "github.com/vmcompose/vmcompose/cmd/vminit", "vminit")
		initrd, err := initramfs.Build(ctx, k, bin, filepath.Join(cache, "initramfs"))
		if err != nil {
			guestErr = err
			return
		}
		root, _, err := rootfs.Ensure(ctx, img, filepath.Join(cache, "rootfs"))
		if err != nil {
			guestErr = err
			return
		}
		guestFix = guestFixture{kernel: k.Image, initrd: initrd, rootfs: root}
	})
	if guestErr != nil {
		t.Fatal(guestErr)
	}
	return guestFix
}

// bootGuest creates and starts spec's VM on d, killed when the test ends,
// and connects to its agent.
func bootGuest(ctx context.Context, t *testing.T, d *qemu.Driver, spec vm.Spec) (*agent.Client, vm.Status) {
	t.Helper()
	if err := d.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Kill(context.Background(), spec.Name) })
	if err := d.Start(ctx, spec.Name); err != nil {
		t.Fatal(err)
	}
	st, err := d.Inspect(ctx, spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	c, err := agent.DialSocket(ctx, st.Agent)
	if err != nil {
		b, _ := os.ReadFile(st.Console)
		t.Fatalf("VM %s: %v\nconsole: %s", spec.Name, err, b)
	}
	t.Cleanup(func() { c.Close() })
	return c, st
}

// serviceSpec is the VM of one service, as the reconciler makes it.
func (f guestFixture) serviceSpec(name string) vm.Spec {
	return vm.Spec{
		Name:        name,
		VCPUs:       1,
		Memory:      256 << 20,
		Kernel:      f.kernel,
		Initramfs:   f.initrd,
		Cmdline:     []string{"quiet"},
		Disks:       []vm.Disk{{Path: f.rootfs, Serial: "rootfs", ReadOnly: true}},
		ScratchSize: 1 << 30,
	}
}

// TestVminitServiceStop boots vminit with a long-running service and stops
// it through the guest shutdown hook (the agent's Shutdown), the first
// step of Stop, with ACPI and kill left unused.
func TestVminitServiceStop(t *testing.T) {
	f := realGuest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var (
		mu     sync.Mutex
		client *agent.Client
		exit   agent.ExitStatus
		hooked bool
	)
	d, err := qemu.New(t.TempDir(), qemu.WithLogger(logger(t)),
		qemu.WithGuestShutdown(func(ctx context.Context, name, sock string) error {
			mu.Lock()
			defer mu.Unlock()
			hooked = true
			var err error
			exit, err = client.Shutdown(ctx)
			return err
		}))
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	c, _ := bootGuest(ctx, t, d, f.serviceSpec("svc"))
	mu.Lock()
	client = c
	mu.Unlock()
	if err := c.Start(ctx, agent.Spec{Command: []string{"sleep", "3600"}}); err != nil {
		t.Fatal(err)
	}
	gst, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if gst.Phase != agent.PhaseRunning {
		t.Fatalf("guest status %+v, want running", gst)
	}
	t.Logf("service running %v after Start", time.Since(t0))
	t1 := time.Now()
	if err := d.Stop(ctx, "svc", 20*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("Stop took %v", time.Since(t1))
	mu.Lock()
	defer mu.Unlock()
	if !hooked {
		t.Error("Stop did not ask the guest first")
	}
	if exit.Signal != "SIGTERM" {
		t.Errorf("service exit %+v, want killed by SIGTERM", exit)
	}
	if time.Since(t1) > 15*time.Second {
		t.Errorf("Stop took %v: the guest did not power off after Shutdown", time.Since(t1))
	}
	if st, _ := d.Inspect(ctx, "svc"); st.State != vm.StateExited {
		t.Errorf("after Stop: %+v, want exited", st)
	}
}
