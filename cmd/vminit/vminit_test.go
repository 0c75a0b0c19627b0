package main_test

// These tests boot real guests: the store's kernel, an initramfs with this
// vminit, a busybox image as the read-only root and a scratch disk, under
// QEMU (TCG unless VMCOMPOSE_TEST_ACCEL says otherwise), and drive them
// through the host-side agent client. Test files may import host packages;
// the command itself must not (TestImportsNoHostPackages).

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/internal/testimage"
	"github.com/vmcompose/vmcompose/oci/rootfs"
	"github.com/vmcompose/vmcompose/vm/initramfs"
	"github.com/vmcompose/vmcompose/vm/kernel/kerneltest"
)

func TestImportsNoHostPackages(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const mod = "github.com/vmcompose/vmcompose/"
	for _, p := range strings.Fields(string(out)) {
		rest, ok := strings.CutPrefix(p, mod)
		if !ok {
			continue
		}
		if !strings.HasPrefix(rest, "guest/") && rest != "cmd/vminit" && rest != "vm/initramfs/modload" {
			t.Errorf("vminit imports %s: the guest must not depend on host packages", p)
		}
	}
}

// fixture is what every guest of the test boots from, built once.
type fixture struct {
	qemu, kernel, initrd, rootfs string
	tscKHz                       int
}

var (
	fixOnce sync.Once
	fix     fixture
	fixErr  error
)

func setup(t *testing.T) fixture {
	t.Helper()
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("guests boot on linux/amd64 hosts only")
	}
	q, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("qemu-system-x86_64 is not installed (CI is set, so this fails instead of skipping)")
		}
		t.Skip("qemu-system-x86_64 is not installed")
	}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 is not installed (e2fsprogs): it formats the scratch disk")
	}
	k := kerneltest.Kernel(t)
	img := testimage.Image(t, testimage.BusyboxEntries(t), []testimage.Entry{
		testimage.File("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n"+
			"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"+
			"app:x:1000:1000:app:/home/app:/bin/sh\n"),
		testimage.File("etc/group", 0o644, "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nwheel:x:10:app\n"),
	})
	fixOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vminit-test-")
		if err != nil {
			fixErr = err
			return
		}
		// The files outlive the test that built them; the OS cleans /tmp.
		bin := filepath.Join(dir, "vminit")
		cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
		if out, err := cmd.CombinedOutput(); err != nil {
			fixErr = fmt.Errorf("building vminit: %v: %s", err, out)
			return
		}
		ctx := context.Background()
		initrd, err := initramfs.Build(ctx, k, bin, dir)
		if err != nil {
			fixErr = err
			return
		}
		root := filepath.Join(dir, "rootfs.ext4")
		if err := rootfs.Build(ctx, img, root); err != nil {
			fixErr = err
			return
		}
		fix = fixture{qemu: q, kernel: k.Image, initrd: initrd, rootfs: root, tscKHz: hostTSCkHz()}
	})
	if fixErr != nil {
		t.Fatal(fixErr)
	}
	return fix
}

func hostTSCkHz() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "cpu MHz" {
			if mhz, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
				return int(mhz * 1000)
			}
		}
	}
	return 0
}

// guest is one running VM.
type guest struct {
	t       *testing.T
	sock    string
	cmd     *exec.Cmd
	console *syncBuffer
	exited  chan struct{}
	booted  time.Time
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// boot starts a guest with a fresh scratch disk (or none) and returns once
// QEMU is listening on the agent socket.
func boot(t *testing.T, withScratch bool) *guest {
	t.Helper()
	f := setup(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	cmdline := fmt.Sprintf("console=ttyS0 quiet tsc_early_khz=%d tsc=reliable pci=off cryptomgr.notests "+
		"initcall_blacklist=init_kprobe_trace,crypto_kdf108_init panic=-1", f.tscKHz)
	if os.Getenv("VMINIT_DEBUG") != "" {
		cmdline += " vminit.debug"
	}
	accel := "tcg"
	if a := os.Getenv("VMCOMPOSE_TEST_ACCEL"); a != "" {
		accel = a
	}
	args := []string{
		"-M", "microvm", "-accel", accel, "-m", "256", "-smp", "1",
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-global", "virtio-mmio.force-legacy=false",
		"-kernel", f.kernel, "-initrd", f.initrd, "-append", cmdline,
		"-serial", "stdio",
		"-drive", "if=none,id=root,format=raw,readonly=on,file=" + f.rootfs,
		"-device", "virtio-blk-device,drive=root,serial=rootfs",
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path=" + sock + ",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name=" + agent.PortName,
	}
	if withScratch {
		scratch := filepath.Join(dir, "scratch.ext4")
		if err := os.WriteFile(scratch, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(scratch, 256<<20); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mkfs.ext4", "-F", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1", scratch).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4: %v: %s", err, out)
		}
		args = append(args,
			"-drive", "if=none,id=scratch,format=raw,file="+scratch,
			"-device", "virtio-blk-device,drive=scratch,serial=scratch")
	}
	g := &guest{t: t, sock: sock, console: &syncBuffer{}, exited: make(chan struct{}), booted: time.Now()}
	g.cmd = exec.Command(f.qemu, args...)
	g.cmd.Stdout, g.cmd.Stderr = g.console, g.console
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.cmd.Wait(); close(g.exited) }()
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		<-g.exited
		if t.Failed() {
			t.Logf("guest console:\n%s", g.console.String())
		}
	})
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case <-g.exited:
			t.Fatalf("qemu exited: %v", g.cmd.ProcessState)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return g
}

// dial connects a new agent client.
func (g *guest) dial(ctx context.Context) *agent.Client {
	g.t.Helper()
	conn, err := net.Dial("unix", g.sock)
	if err != nil {
		g.t.Fatal(err)
	}
	c, err := agent.Dial(ctx, conn)
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { c.Close() })
	return c
}

// waitPoweroff waits for QEMU to exit after the guest powered off.
func (g *guest) waitPoweroff(d time.Duration) {
	g.t.Helper()
	select {
	case <-g.exited:
		if !g.cmd.ProcessState.Success() {
			g.t.Errorf("qemu: %v", g.cmd.ProcessState)
		}
	case <-time.After(d):
		g.t.Fatalf("the guest did not power off within %v", d)
	}
}

// collect attaches to an output stream and gathers it until EOF.
type collected struct {
	done chan struct{}
	buf  syncBuffer
	err  error
}

func collect(ctx context.Context, t *testing.T, c *agent.Client, which agent.Output) *collected {
	t.Helper()
	r, start, err := c.Attach(ctx, which, 0)
	if err != nil {
		t.Fatal(err)
	}
	if start != 0 {
		t.Errorf("attach %s from 0 started at %d", which, start)
	}
	col := &collected{done: make(chan struct{})}
	go func() {
		defer close(col.done)
		_, col.err = io.Copy(&col.buf, r)
		r.Close()
	}()
	return col
}

func (col *collected) wait(t *testing.T) string {
	t.Helper()
	select {
	case <-col.done:
	case <-time.After(30 * time.Second):
		t.Fatal("output stream did not end")
	}
	if col.err != nil {
		t.Errorf("reading output: %v", col.err)
	}
	return col.buf.String()
}

// TestServiceRunsAndExits boots a guest whose service prints to stdout and
// stderr, checks what the guest set up for it (user, sysctl, hostname,
// hosts, resolv.conf, working directory, environment, ulimit, overlay root
// on the scratch disk) and reports exit status 3, then powers off.
func TestServiceRunsAndExits(t *testing.T) {
	g := boot(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := g.dial(ctx)
	dialed := time.Since(g.booted)
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != agent.PhaseReady || st.BootError != "" {
		t.Fatalf("status before start: %+v", st)
	}
	stdout := collect(ctx, t, c, agent.Stdout)
	stderr := collect(ctx, t, c, agent.Stderr)
	script := `echo out; echo err >&2
echo "id=$(id -u):$(id -g) groups=$(id -G)"
echo "domainname=$(cat /proc/sys/kernel/domainname) forward=$(cat /proc/sys/net/ipv4/ip_forward)"
echo "hostname=$(hostname) etc=$(cat /etc/hostname)"
echo "hosts=$(grep -c 'db1 db' /etc/hosts) resolv=$(grep -c 'nameserver 10.0.2.3' /etc/resolv.conf)"
echo "pwd=$(pwd) FOO=$FOO IMG=$IMG HOME=$HOME"
echo "nofile=$(ulimit -n)"
echo "root=$(awk '$2 == "/" {print $3}' /proc/mounts)"
echo "tmp=$(awk '$2 == "/tmp" {print $3}' /proc/mounts) cgroup=$(awk '$2 == "/sys/fs/cgroup" {print $3}' /proc/mounts)"
exit 3`
	grace := 2 * time.Second
	spec := agent.Spec{
		Image: agent.ImageConfig{
			Entrypoint: []string{"/bin/false"},
			Cmd:        []string{"ignored"},
			Env:        []string{"IMG=image", "FOO=image"},
		},
		Entrypoint:      []string{"sh", "-c"},
		Command:         []string{script},
		Env:             []string{"FOO=compose"},
		User:            "1000:1000",
		WorkingDir:      "/srv/app",
		Hostname:        "web",
		Domainname:      "example.test",
		Hosts:           []agent.HostEntry{{IP: "10.0.0.7", Names: []string{"db1", "db"}}},
		DNS:             []string{"10.0.2.3"},
		Sysctls:         map[string]string{"kernel.domainname": "example.test", "net.ipv4.ip_forward": "1"},
		Ulimits:         []agent.Ulimit{{Name: "nofile", Soft: 512, Hard: 1024}},
		StopGracePeriod: &grace,
	}
	if err := c.Start(ctx, spec); err != nil {
		t.Fatal(err)
	}
	started := time.Since(g.booted)
	exit, err := c.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if exit.Code != 3 || exit.Signal != "" {
		t.Errorf("exit status %+v, want code 3", exit)
	}
	out, errOut := stdout.wait(t), stderr.wait(t)
	if errOut != "err\n" {
		t.Errorf("stderr = %q, want %q", errOut, "err\n")
	}
	for _, want := range []string{
		"out\n",
		"id=1000:1000 groups=1000\n",
		"domainname=example.test forward=1\n",
		"hostname=web etc=web\n",
		"hosts=1 resolv=1\n",
		"pwd=/srv/app FOO=compose IMG=image HOME=/home/app\n",
		"nofile=512\n",
		"root=overlay\n",
		"tmp=tmpfs cgroup=cgroup2\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q; stdout:\n%s", want, out)
		}
	}
	if strings.HasPrefix(out, "out\n") == false {
		t.Errorf("stdout does not start with the first line: %q", out)
	}
	if strings.Contains(out, "err") || strings.Contains(errOut, "out") {
		t.Error("stdout and stderr are mixed")
	}
	if strings.Contains(out, "vminit:") {
		t.Error("the console leaked into the service's stdout")
	}
	g.waitPoweroff(20 * time.Second)
	t.Logf("agent connected %v after qemu start, service started at %v, powered off at %v",
		dialed.Round(time.Millisecond), started.Round(time.Millisecond), time.Since(g.booted).Round(time.Millisecond))
}
