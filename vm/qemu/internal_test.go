//go:build linux

package qemu

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/vm/kernel/kerneltest"
)

func TestBuildArgs(t *testing.T) {
	spec := vm.Spec{
		Name:        "web-1",
		VCPUs:       2,
		Memory:      512 << 20,
		Kernel:      "/store/kernel/vmlinux",
		Initramfs:   "/store/initramfs/x.cpio",
		Cmdline:     []string{"quiet", "loglevel=7"},
		Disks:       []vm.Disk{{Path: "/store/rootfs/a,b.ext4", Serial: "rootfs", ReadOnly: true}},
		ScratchSize: 1 << 30,
		Networks:    []vm.Network{{Socket: "/run/net.sock"}, {Socket: "/run/net2.sock", MAC: "52:54:00:aa:bb:cc"}},
		ConsoleLog:  "/logs/web,1.log",
	}
	args := buildArgs(spec, AccelTCG, 2596132, 32, true, nil)
	got := strings.Join(args, " ")
	for _, want := range []string{
		"-name vmcompose:web-1",
		"-M microvm,acpi=on",
		"-accel tcg,tb-size=32",
		"-smp 2 -m 512M",
		"-nodefaults -no-user-config -display none -no-reboot",
		"-global virtio-mmio.force-legacy=false -sandbox on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny",
		"-qmp unix:qmp.sock,server=on,wait=off",
		"-chardev file,id=console,append=on,path=/logs/web,,1.log -serial chardev:console",
		// The control channel on the top transport, the other devices
		// below it in order.
		"-device virtio-serial-device,max_ports=2,bus=virtio-mmio-bus.23 -chardev socket,id=agent,server=on,wait=off,path=agent.sock -device virtserialport,chardev=agent,name=vmcompose.agent",
		// The scratch disk comes first, writable; commas in paths doubled.
		"-drive if=none,id=disk0,format=raw,file=scratch.img,discard=unmap -device virtio-blk-device,drive=disk0,serial=scratch,bus=virtio-mmio-bus.22",
		"-drive if=none,id=disk1,format=raw,file=/store/rootfs/a,,b.ext4,readonly=on -device virtio-blk-device,drive=disk1,serial=rootfs,bus=virtio-mmio-bus.21",
		"-netdev stream,id=net0,server=off,addr.type=unix,addr.path=/run/net.sock -device virtio-net-device,netdev=net0,mac=" + macFor("web-1", 0) + ",bus=virtio-mmio-bus.20",
		"-device virtio-net-device,netdev=net1,mac=52:54:00:aa:bb:cc,bus=virtio-mmio-bus.19",
		"-kernel /store/kernel/vmlinux -initrd /store/initramfs/x.cpio",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("qemu arguments lack %q:\n%s", want, got)
		}
	}
	app := args[slices.Index(args, "-append")+1]
	if !strings.HasPrefix(app, "console=ttyS0 quiet ") || !strings.Contains(app, " tsc_early_khz=2596132 tsc=reliable ") ||
		!strings.HasSuffix(app, " quiet loglevel=7") {
		t.Errorf("kernel command line %q: want the base arguments, the TSC, then the spec's", app)
	}
	if m := macFor("web-1", 0); m == macFor("web-1", 1) || m == macFor("web-2", 0) || !strings.HasPrefix(m, "52:54:00:") {
		t.Errorf("derived MACs are not distinct per VM and NIC: %s", m)
	}
	tmpl := strings.Join(buildArgs(spec, AccelTCG, 2596132, 32, true, &memoryFile{path: "/t/k.ram"}), " ")
	if !strings.Contains(tmpl, "-M microvm,acpi=on,memory-backend=mem ") ||
		!strings.Contains(tmpl, "-m 512M -object memory-backend-file,id=mem,size=512M,mem-path=/t/k.ram,share=off ") {
		t.Errorf("a template copy's memory: %s", tmpl)
	}
	if kvm := strings.Join(buildArgs(spec, AccelKVM, 2596132, 32, false, nil), " "); !strings.Contains(kvm, "-accel kvm -cpu host") || strings.Contains(kvm, "tsc_early_khz") || strings.Contains(kvm, "-sandbox") {
		t.Errorf("KVM arguments: %s", kvm)
	}
	// A spec's own translation cache wins over the driver's.
	spec.TranslationCache = 1 << 30
	if big := strings.Join(buildArgs(spec, AccelTCG, 2596132, 32, true, nil), " "); !strings.Contains(big, "-accel tcg,tb-size=1024 ") {
		t.Errorf("a spec with a 1 GiB translation cache: %s", big)
	}
}

// TestProcStartOddName checks the /proc/<pid>/stat parsing against a
// command name with spaces and parentheses.
func TestProcStartOddName(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip(err)
	}
	odd := filepath.Join(t.TempDir(), "a) Z (b")
	b, err := os.ReadFile(sleep)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(odd, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(odd, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	start, zombie, err := procStart(cmd.Process.Pid)
	if err != nil || zombie || start == 0 {
		t.Fatalf("procStart = %d, %v, %v; want a start time of a live process", start, zombie, err)
	}
	self, _, _ := procStart(os.Getpid())
	if start < self {
		t.Errorf("child started at %d, before this process (%d)", start, self)
	}
	if !alive(cmd.Process.Pid, start) || alive(cmd.Process.Pid, start+1) {
		t.Error("alive does not tell the process from one with another start time")
	}
	cmd.Process.Kill()
	time.Sleep(50 * time.Millisecond) // a zombie now: not reaped yet
	if alive(cmd.Process.Pid, start) {
		t.Error("a killed, unreaped process counts as alive")
	}
	cmd.Wait()
	if alive(cmd.Process.Pid, start) {
		t.Error("a reaped process counts as alive")
	}
}

// TestReusedPidIsNotAdopted: a run.json whose pid now belongs to another
// process (same boot, other start time) is an exited VM, and Kill must not
// touch that process.
func TestReusedPidIsNotAdopted(t *testing.T) {
	d, err := New(t.TempDir(), WithAccel(AccelTCG))
	if err != nil {
		t.Skip(err) // no qemu binary
	}
	ctx := context.Background()
	if err := d.Create(ctx, vm.Spec{Name: "ghost", Kernel: "/nonexistent"}); err != nil {
		t.Fatal(err)
	}
	other := exec.Command("sleep", "30")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { other.Process.Kill(); other.Wait() }()
	start, _, _ := procStart(other.Process.Pid)
	for _, r := range []run{
		{Pid: other.Process.Pid, PidStart: start - 1, BootID: bootID()},   // pid reused
		{Pid: other.Process.Pid, PidStart: start, BootID: "another-boot"}, // host rebooted
	} {
		if err := writeJSON(d.path("ghost", runFile), r); err != nil {
			t.Fatal(err)
		}
		st, err := d.Inspect(ctx, "ghost")
		if err != nil || st.State != vm.StateExited || st.FinishedAt.IsZero() {
			t.Errorf("run %+v: Inspect = %+v, %v; want exited with a finish time", r, st, err)
		}
		if err := d.Kill(ctx, "ghost"); err != nil {
			t.Errorf("Kill = %v, want nil", err)
		}
		if err := d.Stop(ctx, "ghost", time.Second); err != nil {
			t.Errorf("Stop = %v, want nil", err)
		}
		if err := other.Process.Signal(syscall.Signal(0)); err != nil {
			t.Fatalf("the unrelated process was killed: %v", err)
		}
	}
	if err := d.Remove(ctx, "ghost"); err != nil {
		t.Fatal(err)
	}
}

// TestCreateIsAtomic: a Create that fails (here: no room for the scratch
// disk's name because the VM exists) leaves no partial directory behind.
func TestCreateLeavesNothingOnError(t *testing.T) {
	root := t.TempDir()
	d, err := New(root, WithAccel(AccelTCG))
	if err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = d.Create(ctx, vm.Spec{Name: "x", Kernel: "/k", ScratchSize: 64 << 20})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("Create with a cancelled context = %v, want context.Canceled", err)
	}
	if err := d.Create(context.Background(), vm.Spec{Name: "bad", Kernel: "/k", ScratchSize: 1 << 62}); err == nil {
		t.Error("Create of an impossibly large scratch disk succeeded")
	}
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		t.Errorf("left behind: %s", e.Name())
	}
}

func TestNewRemovesStaleDirectories(t *testing.T) {
	root := t.TempDir()
	old := time.Now().Add(-time.Hour)
	for _, n := range []string{".web.creating-123", ".db.removing-456", ".fresh.creating-789", "keep"} {
		if err := os.MkdirAll(filepath.Join(root, n, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if n != ".fresh.creating-789" {
			os.Chtimes(filepath.Join(root, n), old, old)
		}
	}
	if _, err := New(root, WithAccel(AccelTCG)); err != nil {
		t.Skip(err)
	}
	var left []string
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if want := []string{".fresh.creating-789", "keep"}; !slices.Equal(left, want) {
		t.Errorf("after New: %v, want %v", left, want)
	}
}

// TestStartReportsQemuError: when qemu cannot start the VM, Start says
// why, in qemu's words, and nothing keeps running.
func TestStartReportsQemuError(t *testing.T) {
	root := t.TempDir()
	d, err := New(root, WithAccel(AccelTCG))
	if err != nil {
		t.Skip(err)
	}
	ctx := context.Background()
	if err := d.Create(ctx, vm.Spec{Name: "nokernel", Kernel: filepath.Join(root, "no-such-vmlinux")}); err != nil {
		t.Fatal(err)
	}
	err = d.Start(ctx, "nokernel")
	if err == nil || !strings.Contains(err.Error(), "no-such-vmlinux") || !strings.Contains(err.Error(), "nokernel") {
		t.Fatalf("Start with a missing kernel = %v, want an error naming the VM and qemu's complaint about the kernel", err)
	}
	if st, err := d.Inspect(ctx, "nokernel"); err != nil || st.State == vm.StateRunning {
		t.Errorf("after a failed Start: %+v, %v", st, err)
	}
}

// TestTSC: the TSC frequency given to TCG guests agrees with the TSC as
// timed here, within 0.5%.
func TestTSC(t *testing.T) {
	got := tscKHz()
	measured := measureTSCkHz(100 * time.Millisecond)
	if measured == 0 {
		t.Skip("no TSC on this architecture")
	}
	if got <= 0 || math.Abs(float64(got-measured))/float64(measured) > 0.005 {
		t.Errorf("tscKHz() = %d, timed %d kHz", got, measured)
	}
	t.Logf("tsc_early_khz=%d, timed %d", got, measured)
}

// TestSandbox: Debian's qemu has seccomp, so VMs run sandboxed there.
func TestSandbox(t *testing.T) {
	bin, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		t.Skip(err)
	}
	out, _ := exec.Command("dpkg-query", "-W", "-f=${Depends}", "qemu-system-x86").Output()
	if !strings.Contains(string(out), "libseccomp") {
		t.Skip("qemu not from Debian, or built without seccomp")
	}
	if !hasSandbox(bin) {
		t.Errorf("hasSandbox(%s) = false for a qemu linked with libseccomp", bin)
	}
}

// TestUnrecordedQemuIsAdopted: a qemu whose starter died before writing
// run.json is found through qemu's own pidfile, reported running, and
// stopped by Kill; Start does not add a second one.
func TestUnrecordedQemuIsAdopted(t *testing.T) {
	k := kerneltest.Kernel(t)
	d, err := New(t.TempDir(), WithAccel(AccelTCG))
	if err != nil {
		t.Skip(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	spec := vm.Spec{Name: "lost", Kernel: k.Image, Cmdline: []string{"panic=0"}}
	if err := d.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	// What Start does, without recording the process.
	cmd := exec.Command(d.o.binary, buildArgs(spec, AccelTCG, tscKHz(), 32, false, nil)...)
	cmd.Dir = d.dir("lost")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(d.path("lost", pidFile)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("qemu wrote no pidfile")
		}
	}
	st, err := d.Inspect(ctx, "lost")
	if err != nil || st.State != vm.StateRunning || st.Pid != cmd.Process.Pid {
		t.Fatalf("Inspect = %+v, %v; want running as pid %d", st, err, cmd.Process.Pid)
	}
	if err := d.Start(ctx, "lost"); err != nil {
		t.Fatalf("Start of the adopted VM = %v, want nil", err)
	}
	if st2, _ := d.Inspect(ctx, "lost"); st2.Pid != cmd.Process.Pid {
		t.Errorf("Start replaced the adopted qemu: pid %d, want %d", st2.Pid, cmd.Process.Pid)
	}
	killed := make(chan error, 1)
	go func() { killed <- d.Kill(ctx, "lost") }()
	cmd.Wait() // we are its parent here: reap it so that Kill sees it gone
	if err := <-killed; err != nil {
		t.Fatal(err)
	}
	if st, _ := d.Inspect(ctx, "lost"); st.State != vm.StateExited {
		t.Errorf("after Kill: %+v, want exited", st)
	}
}

// TestTransportsSSDT checks the table's frame: a guest kernel that finds a
// bad checksum or length ignores it, and templates' copies would not find
// their disks. (Its contents were checked byte for byte against QEMU's
// own description of the transports it has devices on.)
func TestTransportsSSDT(t *testing.T) {
	b := transportsSSDT()
	if string(b[:4]) != "SSDT" || int(binary.LittleEndian.Uint32(b[4:])) != len(b) {
		t.Fatalf("header %q, length field %d, table %d bytes", b[:4], binary.LittleEndian.Uint32(b[4:]), len(b))
	}
	var sum byte
	for _, c := range b {
		sum += c
	}
	if sum != 0 {
		t.Errorf("checksum: bytes add up to %d, want 0", sum)
	}
	if n := bytes.Count(b, []byte("LNRO0005")); n != agentTransport {
		t.Errorf("%d transports described, want %d", n, agentTransport)
	}
	for i := range agentTransport {
		if !bytes.Contains(b, fmt.Appendf(nil, "XR%02d", i)) {
			t.Errorf("no device XR%02d", i)
		}
	}
	if len(b) != 1606 {
		t.Errorf("%d bytes, want 1606", len(b))
	}
}
