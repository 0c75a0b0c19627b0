//go:build linux

package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/vm"
)

func TestBuildArgsShares(t *testing.T) {
	spec := vm.Spec{
		Name: "web-1", Memory: 512 << 20, Kernel: "/k",
		Shares: []vm.Share{{Tag: "src", Source: "/home/me/src"}, {Tag: "conf", Source: "/etc/x.conf", ReadOnly: true}},
	}
	got := strings.Join(buildArgs(spec, AccelTCG, 0, 0, true, nil), " ")
	for _, want := range []string{
		"-M microvm,acpi=on,memory-backend=mem ",
		"-m 512M -object memory-backend-memfd,id=mem,size=512M,share=on ",
		"-chardev socket,id=fs0,path=virtiofs-0.sock -device vhost-user-fs-device,chardev=fs0,tag=src,bus=virtio-mmio-bus.22 ",
		"-chardev socket,id=fs1,path=virtiofs-1.sock -device vhost-user-fs-device,chardev=fs1,tag=conf,bus=virtio-mmio-bus.21 ",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("qemu arguments lack %q:\n%s", want, got)
		}
	}
	// Host paths stay out of qemu's arguments: the daemons serve them.
	if strings.Contains(got, "/home/me/src") {
		t.Errorf("a share's source is in qemu's arguments:\n%s", got)
	}
	// Without shares, the memory stays private.
	spec.Shares = nil
	if plain := strings.Join(buildArgs(spec, AccelTCG, 0, 0, true, nil), " "); strings.Contains(plain, "memory-backend") || strings.Contains(plain, "vhost-user") {
		t.Errorf("a VM without shares got shared memory or a vhost-user device:\n%s", plain)
	}
	if !strings.Contains(strings.Join(buildArgs(vm.Spec{Name: "x", Kernel: "/k", Shares: spec.Shares}, AccelTCG, 0, 0, false, nil), " "), "-m 256M") {
		t.Error("default memory changed")
	}
	if got := strings.Join(buildArgs(vm.Spec{Name: "x", Kernel: "/k", Shares: []vm.Share{{Tag: "a", Source: "/a"}}}, AccelTCG, 0, 0, false, nil), " "); !strings.Contains(got, "-m 256M -object memory-backend-memfd,id=mem,size=256M,share=on") {
		t.Errorf("default memory with a share: %s", got)
	}
}

func TestVirtiofsdArgs(t *testing.T) {
	got := virtiofsdArgs(`/state/a,b\c/vm/shares/0`, false)
	want := []string{"--fd=3", "-o", `source=/state/a\,b\\c/vm/shares/0`, "-o", "cache=auto", "-o", "timeout=0", "-o", "sandbox=namespace", "-o", "no_xattr"}
	if !slices.Equal(got, want) {
		t.Errorf("virtiofsdArgs = %q\nwant %q", got, want)
	}
	// A shared volume's daemon carries flock and fcntl locks to the host.
	if got, want := virtiofsdArgs("/r", true), append(virtiofsdArgs("/r", false), "-o", "flock", "-o", "posix_lock"); !slices.Equal(got, want) {
		t.Errorf("virtiofsdArgs with locks = %q\nwant %q", got, want)
	}
}

// shareDriver returns a driver on a new root, skipping unless this host
// can run QEMU's virtiofsd.
func shareDriver(t *testing.T) (string, *Driver) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("virtiofsd needs root")
	}
	if _, err := os.Stat(DefaultVirtiofsd); err != nil {
		t.Skip(err)
	}
	root := t.TempDir()
	d, err := New(root, WithAccel(AccelTCG))
	if err != nil {
		t.Skip(err) // no qemu binary
	}
	return root, d
}

// fakeLostDaemon starts a virtiofsd for share 0 of VM name as a Start
// that died before qemu ran would leave it: waiting for a connection.
func fakeLostDaemon(t *testing.T, d *Driver, name string) *exec.Cmd {
	t.Helper()
	root := shareRoot(d.dir(name), 0)
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	sock, err := listenUnix(filepath.Join(d.dir(name), shareSock(0)))
	if err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	cmd := exec.Command(d.o.virtiofsd, virtiofsdArgs(root, false)...)
	cmd.ExtraFiles = []*os.File{sock}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	for deadline := time.Now().Add(5 * time.Second); len(d.findDaemons(d.dir(name)+"/")) == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the daemon did not start")
		}
	}
	return cmd
}

// TestNewEndsLostDaemons: a new Driver ends the virtiofsd of a VM that
// does not run, unless that VM is being started (its lock held).
func TestNewEndsLostDaemons(t *testing.T) {
	root, d := shareDriver(t)
	ctx := context.Background()
	for _, n := range []string{"lost", "starting"} {
		if err := d.Create(ctx, vm.Spec{Name: n, Kernel: "/k", Shares: []vm.Share{{Tag: "s", Source: root}}}); err != nil {
			t.Fatal(err)
		}
	}
	lost := fakeLostDaemon(t, d, "lost")
	starting := fakeLostDaemon(t, d, "starting")
	// A process that only mentions a share root is no daemon.
	bystander := exec.Command("sh", "-c", "sleep 30", "source="+shareRoot(d.dir("lost"), 0))
	if err := bystander.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { bystander.Process.Kill(); bystander.Wait() }()
	unlock, err := d.tryLock("starting")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	lostStart, _, err := procStart(lost.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(root, WithAccel(AccelTCG)); err != nil {
		t.Fatal(err)
	}
	if alive(lost.Process.Pid, lostStart) {
		t.Error("New left the daemon of a VM that does not run")
	}
	if s, zombie, err := procStart(starting.Process.Pid); err != nil || zombie || s == 0 {
		t.Error("New ended the daemon of a VM being started")
	}
	if s, zombie, err := procStart(bystander.Process.Pid); err != nil || zombie || s == 0 {
		t.Error("New ended a process that is no daemon")
	}
	unlock()
	// Remove ends them too.
	if err := d.Remove(ctx, "starting"); err != nil {
		t.Fatal(err)
	}
	if left := d.findDaemons(root + "/"); len(left) > 0 {
		t.Errorf("daemons left after Remove: %+v", left)
	}
}

// TestFailedStartEndsDaemons: when qemu dies at start, the daemons it
// never connected to end too.
func TestFailedStartEndsDaemons(t *testing.T) {
	root, d := shareDriver(t)
	ctx := context.Background()
	src := t.TempDir()
	spec := vm.Spec{Name: "broken", Kernel: filepath.Join(root, "no-such-vmlinux"), Shares: []vm.Share{{Tag: "a", Source: src}, {Tag: "b", Source: src, ReadOnly: true}}}
	if err := d.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	err := d.Start(ctx, "broken")
	if err == nil || !strings.Contains(err.Error(), "no-such-vmlinux") {
		t.Fatalf("Start with a missing kernel = %v, want qemu's complaint", err)
	}
	if left := d.findDaemons(root + "/"); len(left) > 0 {
		t.Errorf("daemons left after a failed Start: %+v", left)
	}
	// The shares were mounted for the daemons only: the host sees empty
	// directories, and Remove leaves the source alone.
	if ents, _ := os.ReadDir(shareRoot(d.dir("broken"), 0)); len(ents) != 0 {
		t.Errorf("the host sees the share's files in the VM directory: %v", ents)
	}
	os.WriteFile(filepath.Join(src, "keep"), []byte("x"), 0o644)
	if err := d.Remove(ctx, "broken"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(src, "keep")); err != nil {
		t.Errorf("Remove touched the share's source: %v", err)
	}
}

// TestStartRefusesBadShares: a share whose source is missing or neither
// a directory nor a file fails Start, naming the share.
func TestStartRefusesBadShares(t *testing.T) {
	root, d := shareDriver(t)
	ctx := context.Background()
	for tag, src := range map[string]string{"missing": filepath.Join(root, "absent"), "device": "/dev/null"} {
		name := "bad-" + tag
		if err := d.Create(ctx, vm.Spec{Name: name, Kernel: "/k", Shares: []vm.Share{{Tag: tag, Source: src}}}); err != nil {
			t.Fatal(err)
		}
		if err := d.Start(ctx, name); err == nil || !strings.Contains(err.Error(), "share "+tag) || !strings.Contains(err.Error(), name) {
			t.Errorf("Start with share %s = %v, want an error naming the VM and the share", src, err)
		}
	}
}
