//go:build linux

package qemu_test

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/vm/kernel/kerneltest"
	"github.com/vmcompose/vmcompose/vm/qemu"
	"github.com/vmcompose/vmcompose/vm/vmtest"
)

// TestNetworkAttachment: a NIC's unix socket is dialled by qemu at Start
// (the network process listens first), and Start fails, naming the VM,
// when nothing listens.
func TestNetworkAttachment(t *testing.T) {
	requireQEMU(t)
	k := kerneltest.Kernel(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	d, err := qemu.New(filepath.Join(dir, "vms"), qemu.WithLogger(logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "net.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := l.Accept(); err == nil {
			accepted <- c
		}
	}()
	spec := vm.Spec{
		Name: "net", Kernel: k.Image, Initramfs: vmtest.Initramfs(t, k),
		Cmdline:  []string{"vmtest.mode=wait"},
		Networks: []vm.Network{{Socket: sock}},
	}
	if err := d.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	defer d.Remove(context.Background(), "net")
	defer d.Kill(context.Background(), "net")
	if err := d.Start(ctx, "net"); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("qemu did not connect to the network socket")
	}
	if err := d.Kill(ctx, "net"); err != nil {
		t.Fatal(err)
	}

	spec.Name = "nonet"
	spec.Networks = []vm.Network{{Socket: filepath.Join(dir, "absent.sock")}}
	if err := d.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	defer d.Remove(context.Background(), "nonet")
	err = d.Start(ctx, "nonet")
	if err == nil {
		d.Kill(ctx, "nonet")
		t.Fatal("Start with nothing listening on the network socket succeeded")
	}
	t.Logf("Start without a network process: %v", err)
	if st, _ := d.Inspect(ctx, "nonet"); st.State == vm.StateRunning {
		t.Errorf("VM without its network: %+v, want not running", st)
	}
}
