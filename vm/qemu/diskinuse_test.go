//go:build linux

package qemu_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/vm/kernel/kerneltest"
	"github.com/vmcompose/vmcompose/vm/qemu"
	"github.com/vmcompose/vmcompose/vm/vmtest"
)

// TestDiskInUse: QEMU's image locking keeps a second VM from attaching a
// disk that a running VM writes, read-write or read-only, and Start says
// so with a vm.DiskInUseError naming the image.
func TestDiskInUse(t *testing.T) {
	requireQEMU(t)
	k := kerneltest.Kernel(t)
	initrd := vmtest.Initramfs(t, k)
	d, err := qemu.New(t.TempDir(), qemu.WithLogger(logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(disk, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 16<<20); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := func(name string, ro bool) vm.Spec {
		return vm.Spec{Name: name, Kernel: k.Image, Initramfs: initrd, Memory: 128 << 20, Cmdline: []string{"quiet", "vmtest.mode=wait"},
			Disks: []vm.Disk{{Path: disk, Serial: "vol", ReadOnly: ro}}}
	}
	for _, s := range []vm.Spec{spec("writer", false), spec("second", false), spec("reader", true)} {
		if err := d.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Start(ctx, "writer"); err != nil {
		t.Fatal(err)
	}
	defer d.Kill(context.Background(), "writer")
	for _, name := range []string{"second", "reader"} {
		err := d.Start(ctx, name)
		var e *vm.DiskInUseError
		if !errors.As(err, &e) || e.Path != disk {
			d.Kill(ctx, name)
			t.Errorf("Start of %s beside a writer: %v; want a DiskInUseError for %s", name, err, disk)
		}
	}
}
