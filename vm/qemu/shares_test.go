//go:build linux

package qemu_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
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

// TestVminitShares boots vminit with bind mounts as reconcile makes them
// (a directory, a read-only directory, a single file), virtiofs loaded on
// demand as a service initramfs has it, and checks through the agent what
// a service sees: the host's files, owners and modes, its own writes on
// the host, host edits at the next read, and no way to write a read-only
// share.
func TestVminitShares(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("QEMU's virtiofsd needs root")
	}
	f := realGuest(t)
	k := kerneltest.Kernel(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bin := vmtest.GoBuild(t, "github.com/vmcompose/vmcompose/cmd/vminit", "vminit")
	initrd, err := initramfs.Build(ctx, k, bin, filepath.Join(vmtest.CacheDir(t), "initramfs"),
		initramfs.WithModules("virtio_mmio", "virtio_blk", "virtio_console", "overlay", "button", "evdev"),
		initramfs.WithOnDemand("virtiofs"))
	if err != nil {
		t.Fatal(err)
	}

	host := t.TempDir()
	src, ro, conf := filepath.Join(host, "src"), filepath.Join(host, "ro"), filepath.Join(host, "conf", "app.yaml")
	for _, d := range []string{src, ro, filepath.Dir(conf)} {
		os.MkdirAll(d, 0o755)
	}
	write := func(p, s string) {
		t.Helper()
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(src, "hello.txt"), "from host\n")
	os.Chown(filepath.Join(src, "hello.txt"), 1000, 1000)
	os.Chmod(filepath.Join(src, "hello.txt"), 0o640)
	write(filepath.Join(ro, "r.txt"), "read only\n")
	write(conf, "a: 1\n")
	write(filepath.Join(host, "conf", "secret"), "not for the guest\n")

	root := t.TempDir()
	d, err := qemu.New(root, qemu.WithLogger(logger(t)))
	if err != nil {
		t.Fatal(err)
	}
	spec := f.serviceSpec("binds")
	spec.Initramfs = initrd
	spec.Shares = []vm.Share{{Tag: "bind0", Source: src}, {Tag: "bind1", Source: ro, ReadOnly: true}, {Tag: "bind2", Source: conf}}
	t0 := time.Now()
	c, st := bootGuest(ctx, t, d, spec)
	if err := c.Start(ctx, agent.Spec{Command: []string{"sleep", "3600"}, Mounts: []agent.Mount{
		{Type: agent.MountVirtiofs, Source: "bind0", Target: "/app"},
		{Type: agent.MountVirtiofs, Source: "bind1", Target: "/ro", ReadOnly: true},
		{Type: agent.MountVirtiofs, Source: "bind2", Target: "/etc/app/app.yaml", Subpath: "app.yaml"},
	}}); err != nil {
		b, _ := os.ReadFile(st.Console)
		t.Fatalf("%v\n%s", err, b)
	}
	t.Logf("service running with 3 shares %v after Start", time.Since(t0))

	sh := func(script string) string {
		t.Helper()
		var out bytes.Buffer
		p, err := c.Exec(ctx, agent.ExecSpec{Argv: []string{"sh", "-c", script}}, agent.ExecIO{Stdout: &out, Stderr: &out})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := p.Wait(); err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out.String())
	}
	check := func(what, script, want string) {
		t.Helper()
		if got := sh(script); got != want {
			t.Errorf("%s: %q, want %q", what, got, want)
		}
	}
	check("host file", "cat /app/hello.txt", "from host")
	check("host owner and mode", "stat -c '%u:%g %a' /app/hello.txt", "1000:1000 640")
	check("guest write", "echo from guest > /app/guest.txt && mkdir -p /app/sub && echo ok", "ok")
	if b, err := os.ReadFile(filepath.Join(src, "guest.txt")); err != nil || string(b) != "from guest\n" {
		t.Errorf("the guest's write on the host: %q, %v", b, err)
	}
	// A host edit shows at the next read, however soon: the guest does
	// not keep the file's size or data from the read before.
	for i, s := range []string{"edited on the host\n", "edited on the host, and grown\n", "short\n"} {
		write(filepath.Join(src, "hello.txt"), s)
		check("host edit "+string(rune('1'+i)), "cat /app/hello.txt", strings.TrimSpace(s))
	}
	write(filepath.Join(src, "new.txt"), "new\n")
	check("host new file", "cat /app/new.txt", "new")
	os.Remove(filepath.Join(src, "new.txt"))
	check("host removal", "cat /app/new.txt 2>/dev/null || echo gone", "gone")

	check("read-only share", "cat /ro/r.txt; touch /ro/x 2>/dev/null && echo written || echo refused", "read only\nrefused")
	check("read-only share remounted read-write", "mount -o remount,rw /ro 2>/dev/null; (echo x >> /ro/r.txt) 2>/dev/null && echo written || echo refused", "refused")
	if b, _ := os.ReadFile(filepath.Join(ro, "r.txt")); string(b) != "read only\n" {
		t.Errorf("the guest wrote a read-only share: %q", b)
	}

	check("file share", "cat /etc/app/app.yaml; ls /etc/app", "a: 1\napp.yaml")
	check("file share write", "echo 'b: 2' >> /etc/app/app.yaml && echo ok", "ok")
	if b, _ := os.ReadFile(conf); string(b) != "a: 1\nb: 2\n" {
		t.Errorf("the guest's write to a shared file, on the host: %q", b)
	}
	write(conf, "a: 3\n") // in place, as docker's bind needs too
	check("file share host edit", "cat /etc/app/app.yaml", "a: 3")
	check("share staging left mounted", "grep -c /run/share- /proc/mounts", "0")

	if err := d.Kill(ctx, "binds"); err != nil {
		t.Fatal(err)
	}
	if pids := vmtest.Processes("virtiofsd", root); len(pids) > 0 {
		t.Errorf("virtiofsd left after Kill: %v", pids)
	}
}
