//go:build linux

package qemu_test

import (
	"log/slog"
	"os"
	"testing"

	"github.com/vmcompose/vmcompose/internal/testenv"
	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/vm/kernel/kerneltest"
	"github.com/vmcompose/vmcompose/vm/qemu"
	"github.com/vmcompose/vmcompose/vm/vmtest"
)

func requireQEMU(t testing.TB) {
	t.Helper()
	testenv.LookPath(t, "qemu-system-x86_64", "scripts/setup installs it")
}

func logger(t testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func TestConformance(t *testing.T) {
	requireQEMU(t)
	k := kerneltest.Kernel(t)
	g := realGuest(t)
	vmtest.Run(t, vmtest.Fixtures{
		Service:     &vmtest.Service{Kernel: g.kernel, Initramfs: g.initrd, Rootfs: g.rootfs},
		Kernel:      k.Image,
		Initramfs:   vmtest.Initramfs(t, k),
		ProcessName: "qemu-system",
		// QEMU's virtiofsd needs root.
		Shares:           os.Geteuid() == 0 && fileExists(qemu.DefaultVirtiofsd),
		ShareProcessName: "virtiofsd",
		NewDriver: func(t testing.TB, root string, shutdown vm.GuestShutdownFunc) vm.Driver {
			opts := []qemu.Option{qemu.WithLogger(logger(t))}
			if shutdown != nil {
				opts = append(opts, qemu.WithGuestShutdown(shutdown))
			}
			d, err := qemu.New(root, opts...)
			if err != nil {
				t.Fatal(err)
			}
			return d
		},
	})
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
