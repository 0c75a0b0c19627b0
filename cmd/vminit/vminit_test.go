package main_test

// These tests boot real guests: the store's kernel, an initramfs with this
// vminit, a busybox image as the read-only root and a scratch disk, under
// QEMU (TCG unless VMCOMPOSE_TEST_ACCEL says otherwise), and drive them
// through the host-side agent client. Test files may import host packages;
// the command itself must not (internal/importrules).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
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
	"github.com/vmcompose/vmcompose/internal/testenv"
	"github.com/vmcompose/vmcompose/internal/testimage"
	"github.com/vmcompose/vmcompose/oci/rootfs"
	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/vm/initramfs"
	"github.com/vmcompose/vmcompose/vm/kernel/kerneltest"
)

// fixture is what every guest of the test boots from, built once.
type fixture struct {
	qemu, kernel, initrd, rootfs string
	tscKHz                       int
}

// hostHTTP is the address of a web server on the host's loopback that
// guests reach at 10.0.2.100:80.
var hostHTTP string

func TestMain(m *testing.M) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from the host")
	}))
	hostHTTP = srv.Listener.Addr().String()
	code := m.Run()
	srv.Close()
	if fixDir != "" {
		os.RemoveAll(fixDir)
	}
	os.Exit(code)
}

var (
	fixDir  string
	fixOnce sync.Once
	fix     fixture
	fixErr  error
)

func setup(t *testing.T) fixture {
	t.Helper()
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("guests boot on linux/amd64 hosts only")
	}
	q := testenv.LookPath(t, "qemu-system-x86_64", "scripts/setup installs it")
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("mkfs.ext4 is not installed (e2fsprogs): it formats the scratch disk")
	}
	k := kerneltest.Kernel(t)
	img := testimage.Image(t, testimage.BusyboxEntries(t), []testimage.Entry{
		testimage.File("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n"+
			"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"+
			"app:x:1000:1000:app:/home/app:/bin/sh\n"),
		testimage.File("etc/group", 0o644, "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nwheel:x:10:app\n"),
		testimage.Dir("srv/", 0o755),
		testimage.Dir("srv/data/", 0o705),
		testimage.File("srv/data/seed.txt", 0o640, "seed\n"),
		testimage.Dir("srv/conf/", 0o755),
		testimage.File("srv/conf/app.conf", 0o644, "conf\n"),
	})
	fixOnce.Do(func() {
		dir, err := os.MkdirTemp("", "vminit-test-")
		if err != nil {
			fixErr = err
			return
		}
		fixDir = dir // shared by the tests, removed by TestMain
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

const testMAC = "52:54:00:12:34:56"

// guest is one running VM.
type guest struct {
	t       *testing.T
	sock    string
	qmp     string
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
func boot(t *testing.T, withScratch bool, volumes ...string) *guest {
	scratch := ""
	if withScratch {
		scratch = filepath.Join(t.TempDir(), "scratch.ext4")
	}
	return bootDisks(t, true, scratch, volumes...)
}

// bootNoRoot starts a guest without the image's disk.
func bootNoRoot(t *testing.T) *guest {
	return bootDisks(t, false, filepath.Join(t.TempDir(), "scratch.ext4"))
}

// bootDisks starts a guest with the image's disk when asked, the scratch
// disk at scratch unless it is "" (made when missing), and new empty ext4
// disks with the given serials (SERIAL=PATH: the disk image at PATH).
func bootDisks(t *testing.T, withRoot bool, scratch string, volumes ...string) *guest {
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
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path=" + sock + ",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name=" + agent.PortName,
		"-qmp", "unix:" + filepath.Join(dir, "qmp.sock") + ",server=on,wait=off",
		// QEMU's user network, isolated (restrict=on) but for
		// 10.0.2.100:80, which leads to hostHTTP on the host's loopback.
		"-netdev", "user,id=n0,restrict=on,guestfwd=tcp:10.0.2.100:80-tcp:" + hostHTTP,
		"-device", "virtio-net-device,netdev=n0,mac=" + testMAC,
	}
	if withRoot {
		args = append(args,
			"-drive", "if=none,id=root,format=raw,readonly=on,file="+f.rootfs,
			"-device", "virtio-blk-device,drive=root,serial=rootfs")
	}
	disks := map[string]string{}
	if scratch != "" {
		volumes = append([]string{"scratch"}, volumes...)
		disks["scratch"] = scratch
	}
	for i, serial := range volumes {
		serial, path, _ := strings.Cut(serial, "=")
		disk, ok := disks[serial]
		if path != "" {
			disk, ok = path, true
		}
		if !ok {
			disk = filepath.Join(dir, serial+".ext4")
		}
		if _, err := os.Stat(disk); err == nil {
			args = append(args,
				"-drive", fmt.Sprintf("if=none,id=disk%d,format=raw,file=%s", i, disk),
				"-device", fmt.Sprintf("virtio-blk-device,drive=disk%d,serial=%s", i, serial))
			continue
		}
		if err := os.WriteFile(disk, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(disk, 256<<20); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("mkfs.ext4", "-F", "-q", "-E", "lazy_itable_init=1,lazy_journal_init=1", disk).CombinedOutput(); err != nil {
			t.Fatalf("mkfs.ext4: %v: %s", err, out)
		}
		args = append(args,
			"-drive", fmt.Sprintf("if=none,id=disk%d,format=raw,file=%s", i, disk),
			"-device", fmt.Sprintf("virtio-blk-device,drive=disk%d,serial=%s", i, serial))
	}
	g := &guest{t: t, sock: sock, qmp: filepath.Join(dir, "qmp.sock"), console: &syncBuffer{}, exited: make(chan struct{}), booted: time.Now()}
	g.cmd = exec.Command(f.qemu, args...)
	g.cmd.Stdout, g.cmd.Stderr = g.console, g.console
	if err := g.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { g.cmd.Wait(); close(g.exited) }()
	t.Cleanup(func() {
		g.cmd.Process.Kill()
		<-g.exited
		if t.Failed() || os.Getenv("VMINIT_DEBUG") != "" {
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
	// QEMU creates the socket file a moment before it listens on it.
	var conn net.Conn
	for {
		var err error
		conn, err = net.Dial("unix", g.sock)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			g.t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
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
	t.Parallel()
	// vol1 is a volume of earlier versions, with its data at its root;
	// vol2 a volume disk as vmcompose makes them now.
	vol2 := filepath.Join(t.TempDir(), "vol2.img")
	if err := vm.CreateVolume(context.Background(), vol2, 64<<20); err != nil {
		t.Fatal(err)
	}
	g := boot(t, true, "vol1", "vol2="+vol2)
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
echo "root=$(awk '$2 == "/" {print $3, substr($4, 1, 3)}' /proc/mounts)"
echo "shm=$(awk '$2 == "/dev/shm" {print $4}' /proc/mounts)"
echo "tmp=$(awk '$2 == "/tmp" {print $3}' /proc/mounts) cgroup=$(awk '$2 == "/sys/fs/cgroup" {print $3}' /proc/mounts)"
echo "addr=$(ip -4 -o addr show dev eth0 | awk '{print $4}') mtu=$(cat /sys/class/net/eth0/mtu) $(ip route | grep default)"
echo "http=$(wget -q -O - http://10.0.2.100/)"
echo "lo=$(ip -4 -o addr show dev lo | awk '{print $4}')"
echo "volume=$(awk '$2 == "/srv/data" {print $3}' /proc/mounts) $(stat -c '%a' /srv/data) $(ls /srv/data | tr '\n' ' ')"
echo "conf=$(awk '$2 == "/srv/conf" {print $3}' /proc/mounts) $(stat -c '%a' /srv/conf) $(ls -A /srv/conf | tr '\n' ' ')"
echo "tmpfs=$(awk '$2 == "/cache" {print $3, $4}' /proc/mounts)"
echo "secret=$(cat /run/secrets/token) $(stat -c '%a %u:%g' /run/secrets/token)"
exit 3`
	grace := 2 * time.Second
	spec := agent.Spec{
		Image: agent.ImageConfig{
			Entrypoint: []string{"/bin/false"},
			Cmd:        []string{"ignored"},
			Env:        []string{"IMG=image", "FOO=image"},
		},
		Entrypoint: []string{"sh", "-c"},
		Command:    []string{script},
		Env:        []string{"FOO=compose"},
		User:       "1000:1000",
		GroupAdd:   []string{"wheel", "77"},
		ReadOnly:   true,
		ShmSize:    8 << 20,
		WorkingDir: "/srv/app",
		Hostname:   "web",
		Domainname: "example.test",
		Hosts:      []agent.HostEntry{{IP: "10.0.0.7", Names: []string{"db1", "db"}}},
		DNS:        []string{"10.0.2.3"},
		Mounts: []agent.Mount{
			{Type: agent.MountTmpfs, Target: "/cache", Options: "size=1m,mode=1777"},
			{Type: agent.MountDisk, Source: "vol1", Target: "/srv/data"},
			{Type: agent.MountDisk, Source: "vol2", Target: "/srv/conf", Subpath: vm.VolumeData},
		},
		Files:           []agent.File{{Path: "/run/secrets/token", Content: []byte("s3cret"), Mode: 0o400, UID: 1000, GID: 1000}},
		Networks:        []agent.Interface{{MAC: testMAC, Addresses: []string{"10.0.2.15/24"}, Gateway: "10.0.2.2", MTU: 1400}},
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
		"id=1000:1000 groups=1000 10 77\n",
		"domainname=example.test forward=1\n",
		"hostname=web etc=web\n",
		"hosts=1 resolv=1\n",
		"pwd=/srv/app FOO=compose IMG=image HOME=/home/app\n",
		"nofile=512\n",
		"root=overlay ro,\n",
		"shm=rw,nosuid,nodev,relatime,size=8192k",
		"tmp=tmpfs cgroup=cgroup2\n",
		"addr=10.0.2.15/24 mtu=1400 default via 10.0.2.2 dev eth0",
		"http=hello from the host\n",
		"lo=127.0.0.1/8\n",
		"volume=ext4 705 lost+found seed.txt \n",
		"conf=ext4 755 app.conf \n",
		"tmpfs=tmpfs rw,nosuid,nodev,relatime,size=1024k",
		"secret=s3cret 400 1000:1000\n",
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
	// The copy went into vol2's data directory, which is all the guest
	// saw of it.
	if out, err := exec.Command("debugfs", "-R", "ls /data", vol2).Output(); err != nil || !strings.Contains(string(out), "app.conf") {
		t.Errorf("vol2's data directory: %v %s", err, out)
	}
	if out, err := exec.Command("e2fsck", "-fn", vol2).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn vol2: %v\n%s", err, out)
	}
	t.Logf("agent connected %v after qemu start, service started at %v, powered off at %v",
		dialed.Round(time.Millisecond), started.Round(time.Millisecond), time.Since(g.booted).Round(time.Millisecond))
}

// TestLongRunningService runs a service that waits for SIGTERM, and while it
// runs: exec with and without a tty, healthchecks, a signal, orphans reaped
// by PID 1, a host that reconnects; then Shutdown delivers the stop signal.
func TestLongRunningService(t *testing.T) {
	t.Parallel()
	g := boot(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c := g.dial(ctx)
	script := `trap 'echo bye; exit 0' TERM
trap 'echo usr1' USR1
echo ready
while :; do sleep 100 & wait; done`
	if err := c.Start(ctx, agent.Spec{
		Image:    agent.ImageConfig{Cmd: []string{"sh", "-c", script}, User: "nobody"},
		Hostname: "svc",
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, agent.Spec{Image: agent.ImageConfig{Cmd: []string{"true"}}}); !errors.Is(err, agent.ErrAlreadyStarted) {
		t.Errorf("second Start: %v, want ErrAlreadyStarted", err)
	}
	waitOutput(ctx, t, c, agent.Stdout, "ready\n")

	t.Run("exec", func(t *testing.T) {
		var out, errOut bytes.Buffer
		start := time.Now()
		p, err := c.Exec(ctx, agent.ExecSpec{
			Argv: []string{"sh", "-c", `read line; echo "got $line"; echo "user=$(id -un) tty=$(tty)" ; echo oops >&2; exit 7`},
			Env:  []string{"X=1"},
		}, agent.ExecIO{Stdin: strings.NewReader("hello\n"), Stdout: &out, Stderr: &errOut})
		if err != nil {
			t.Fatal(err)
		}
		exit, err := p.Wait()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("exec round trip %v", time.Since(start).Round(time.Millisecond))
		if exit.Code != 7 {
			t.Errorf("exit %+v, want 7", exit)
		}
		if want := "got hello\nuser=nobody tty=not a tty\n"; out.String() != want {
			t.Errorf("stdout %q, want %q", out.String(), want)
		}
		if errOut.String() != "oops\n" {
			t.Errorf("stderr %q, want %q", errOut.String(), "oops\n")
		}
	})

	t.Run("exec-tty", func(t *testing.T) {
		stdinR, stdinW := io.Pipe()
		var out syncBuffer
		p, err := c.Exec(ctx, agent.ExecSpec{
			Argv: []string{"sh", "-c", `stty size; read line; stty size; echo "term=$TERM tty=$(tty) line=$line"; exit 5`},
			User: "1000", Tty: true, Rows: 24, Cols: 80,
		}, agent.ExecIO{Stdin: stdinR, Stdout: &out})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, &out, "24 80")
		if err := p.Resize(40, 132); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond) // the resize frame goes first
		io.WriteString(stdinW, "typed\r")
		exit, err := p.Wait()
		stdinW.Close()
		if err != nil {
			t.Fatal(err)
		}
		if exit.Code != 5 {
			t.Errorf("exit %+v, want 5", exit)
		}
		s := out.String()
		for _, want := range []string{"24 80\r\n", "typed\r\n", "40 132\r\n", "term=xterm tty=/dev/pts/0 line=typed\r\n"} {
			if !strings.Contains(s, want) {
				t.Errorf("tty output lacks %q: %q", want, s)
			}
		}
	})

	t.Run("exec-killed-with-its-host", func(t *testing.T) {
		ectx, ecancel := context.WithCancel(ctx)
		var out syncBuffer
		p, err := c.Exec(ectx, agent.ExecSpec{Argv: []string{"sh", "-c", "echo $$; exec sleep 1000"}}, agent.ExecIO{Stdout: &out})
		if err != nil {
			t.Fatal(err)
		}
		waitFor(t, &out, "\n")
		ecancel()
		if _, err := p.Wait(); err == nil {
			t.Error("Wait after cancel: nil error")
		}
		pid := strings.TrimSpace(out.String())
		res, err := c.Health(ctx, []string{"sh", "-c", "sleep 0.3; test -e /proc/" + pid + " && echo alive || echo gone"}, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if res.Output != "gone\n" {
			t.Errorf("exec of a cancelled host: pid %s %s", pid, res.Output)
		}
	})

	t.Run("health", func(t *testing.T) {
		res, err := c.Health(ctx, []string{"sh", "-c", "echo healthy; id -un; exit 0"}, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if res.ExitCode != 0 || res.TimedOut || res.Output != "healthy\nnobody\n" {
			t.Errorf("health %+v", res)
		}
		res, err = c.Health(ctx, []string{"sh", "-c", "echo sick >&2; exit 1"}, 5*time.Second)
		if err != nil || res.ExitCode != 1 || res.Output != "sick\n" {
			t.Errorf("failing health %+v, %v", res, err)
		}
		start := time.Now()
		res, err = c.Health(ctx, []string{"sleep", "10"}, 300*time.Millisecond)
		if err != nil || !res.TimedOut || res.ExitCode != -1 {
			t.Errorf("slow health %+v, %v", res, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("health timeout of 300ms took %v", d)
		}
		if _, err := c.Health(ctx, []string{"no-such-command"}, time.Second); !errors.Is(err, agent.ErrCommandNotFound) {
			t.Errorf("health with a missing command: %v, want ErrCommandNotFound", err)
		}
	})

	t.Run("orphans-reaped", func(t *testing.T) {
		// The subshell exits at once, so its sleeps are orphans whose
		// parent becomes PID 1; each must be reaped when it exits.
		res, err := c.Health(ctx, []string{"sh", "-c", `(sleep 0.1 & sleep 0.1 & sleep 0.2 &) ; sleep 1
grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null | wc -l
grep -h '^PPid:' /proc/[0-9]*/status 2>/dev/null | grep -c 'PPid:[[:space:]]*1$'`}, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Fields(res.Output)
		if len(lines) != 2 || lines[0] != "0" {
			t.Errorf("zombies after orphans exited: %q", res.Output)
		}
	})

	t.Run("signal", func(t *testing.T) {
		if err := c.Signal(ctx, "SIGUSR1"); err != nil {
			t.Fatal(err)
		}
		waitOutput(ctx, t, c, agent.Stdout, "ready\nusr1\n")
		// A signal to PID 1 from inside the guest goes on to the service.
		var errOut bytes.Buffer
		p, err := c.Exec(ctx, agent.ExecSpec{Argv: []string{"kill", "-USR1", "1"}, User: "root"}, agent.ExecIO{Stderr: &errOut})
		if err != nil {
			t.Fatal(err)
		}
		if st, err := p.Wait(); err != nil || st.Code != 0 {
			t.Fatalf("kill -USR1 1: %+v, %v: %s", st, err, errOut.String())
		}
		waitOutput(ctx, t, c, agent.Stdout, "ready\nusr1\nusr1\n")
		if err := c.Signal(ctx, "SIGNOPE"); !errors.Is(err, agent.ErrInvalid) {
			t.Errorf("unknown signal: %v, want ErrInvalid", err)
		}
	})

	t.Run("reconnect", func(t *testing.T) {
		c.Close()
		// Once at once, as a restarted supervisor could, then after a
		// pause, so the guest sees the port without a host in between.
		c1 := g.dial(ctx)
		c1.Close()
		time.Sleep(500 * time.Millisecond)
		t0 := time.Now()
		c2 := g.dial(ctx)
		t.Logf("reconnect took %v", time.Since(t0).Round(time.Millisecond))
		st, err := c2.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Phase != agent.PhaseRunning || st.Pid == 0 {
			t.Errorf("status after reconnect %+v", st)
		}
		// Output from before the reconnect is still there.
		waitOutput(ctx, t, c2, agent.Stdout, "ready\nusr1\n")
		c = c2
	})

	stdout, start, err := c.Attach(ctx, agent.Stdout, 100)
	if err != nil {
		t.Fatal(err)
	}
	if start != int64(len("ready\nusr1\nusr1\n")) {
		t.Errorf("attach past the end started at %d", start)
	}
	outc := make(chan string)
	go func() { b, _ := io.ReadAll(stdout); outc <- string(b) }()
	t0 := time.Now()
	exit, err := c.Shutdown(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if exit.Code != 0 {
		t.Errorf("exit after stop %+v, want 0 (the TERM trap exits 0)", exit)
	}
	if out := <-outc; out != "bye\n" {
		t.Errorf("output after the stop signal %q, want %q", out, "bye\n")
	}
	g.waitPoweroff(20 * time.Second)
	t.Logf("shutdown to power-off %v", time.Since(t0).Round(time.Millisecond))
}

// TestStopGracePeriod checks that a service ignoring the stop signal is
// killed after the grace period, that a service with a tty gets one, and
// that a guest without a scratch disk still boots (tmpfs upper layer).
func TestStopGracePeriod(t *testing.T) {
	t.Parallel()
	g := boot(t, false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Connect only once the guest has been waiting for a host for a while.
	time.Sleep(4 * time.Second)
	t0 := time.Now()
	c := g.dial(ctx)
	t.Logf("late dial took %v", time.Since(t0).Round(time.Millisecond))
	// Exec works before Start, as root.
	var out bytes.Buffer
	p, err := c.Exec(ctx, agent.ExecSpec{Argv: []string{"id", "-u"}}, agent.ExecIO{Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := p.Wait(); err != nil || st.Code != 0 || out.String() != "0\n" {
		t.Errorf("exec before start: %+v %v %q", st, err, out.String())
	}
	grace := 500 * time.Millisecond
	if err := c.Start(ctx, agent.Spec{
		Image: agent.ImageConfig{Entrypoint: []string{"sh", "-c"}, StopSignal: "SIGINT",
			Cmd: []string{`trap '' TERM INT; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo "tty $TERM" >&2; echo up; while :; do sleep 1; done`}},
		StopGracePeriod: &grace,
		Tty:             true,
	}); err != nil {
		t.Fatal(err)
	}
	waitOutput(ctx, t, c, agent.Stdout, "tty xterm\r\nup\r\n")
	t0 = time.Now()
	exit, err := c.Shutdown(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := time.Since(t0)
	if exit.Code != 137 || exit.Signal != "SIGKILL" {
		t.Errorf("exit %+v, want 137 SIGKILL", exit)
	}
	if d < grace || d > grace+5*time.Second {
		t.Errorf("stop took %v with a grace period of %v", d, grace)
	}
	g.waitPoweroff(20 * time.Second)
}

// TestBootFailureIsReported checks that a guest without its root disk
// reports why on Start instead of hanging, and powers off on Shutdown.
func TestBootFailureIsReported(t *testing.T) {
	t.Parallel()
	g := bootNoRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := g.dial(ctx)
	err := c.Start(ctx, agent.Spec{Image: agent.ImageConfig{Cmd: []string{"true"}}})
	if !errors.Is(err, agent.ErrBootFailed) || !strings.Contains(err.Error(), `serial "rootfs"`) {
		t.Errorf("Start on a guest without its root disk: %v", err)
	}
	if _, err := c.Shutdown(ctx); !errors.Is(err, agent.ErrNotStarted) {
		t.Errorf("Shutdown before start: %v, want ErrNotStarted", err)
	}
	g.waitPoweroff(20 * time.Second)
}

// waitOutput attaches to a stream from its start until it has read want.
func waitOutput(ctx context.Context, t *testing.T, c *agent.Client, which agent.Output, want string) {
	t.Helper()
	r, _, err := c.Attach(ctx, which, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte(want)) {
		n, err := r.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("%s: read %q, want %q in it: %v", which, got, want, err)
		}
	}
}

// waitFor waits until b contains s.
func waitFor(t *testing.T, b *syncBuffer, s string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(b.String(), s) {
		if time.Now().After(deadline) {
			t.Fatalf("output %q never contained %q", b.String(), s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// qmpCommand runs one QMP command (without arguments) on the guest's QEMU.
func (g *guest) qmpCommand(cmd string) {
	g.t.Helper()
	conn, err := net.Dial("unix", g.qmp)
	if err != nil {
		g.t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	dec := json.NewDecoder(conn)
	var greeting, reply map[string]any
	if err := dec.Decode(&greeting); err != nil {
		g.t.Fatalf("qmp greeting: %v", err)
	}
	for _, c := range []string{"qmp_capabilities", cmd} {
		fmt.Fprintf(conn, `{"execute": %q}`+"\n", c)
		for {
			reply = nil
			if err := dec.Decode(&reply); err != nil {
				g.t.Fatalf("qmp %s: %v", c, err)
			}
			if _, ok := reply["event"]; !ok {
				break
			}
		}
		if _, ok := reply["return"]; !ok {
			g.t.Fatalf("qmp %s: %v", c, reply)
		}
	}
}

// TestPowerButton checks that the ACPI power button (QMP system_powerdown,
// the VMM's way to ask) stops the service with its stop signal, hands the
// exit status to a waiting host and powers off.
func TestPowerButton(t *testing.T) {
	t.Parallel()
	g := boot(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := g.dial(ctx)
	if err := c.Start(ctx, agent.Spec{
		Image:      agent.ImageConfig{Cmd: []string{"sh", "-c", "trap 'echo bye; exit 4' HUP; echo up; while :; do sleep 1; done"}},
		StopSignal: "SIGHUP",
	}); err != nil {
		t.Fatal(err)
	}
	waitOutput(ctx, t, c, agent.Stdout, "up\n")
	stdout, _, err := c.Attach(ctx, agent.Stdout, 0)
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan agent.ExitStatus, 1)
	go func() {
		st, err := c.Wait(ctx)
		if err != nil {
			t.Error(err)
		}
		waited <- st
	}()
	t0 := time.Now()
	g.qmpCommand("system_powerdown")
	out, _ := io.ReadAll(stdout)
	if string(out) != "up\nbye\n" {
		t.Errorf("stdout %q, want the trap's bye", out)
	}
	if st := <-waited; st.Code != 4 {
		t.Errorf("exit %+v, want 4 from the HUP trap", st)
	}
	g.waitPoweroff(20 * time.Second)
	t.Logf("power button to power-off %v", time.Since(t0).Round(time.Millisecond))
}

// TestScratchPersists checks that what the service writes to its root
// survives a power-off on the scratch disk, as a stopped container's
// writable layer does, and that files of the image stay as they were.
func TestScratchPersists(t *testing.T) {
	t.Parallel()
	scratch := filepath.Join(t.TempDir(), "scratch.ext4")
	run := func(script string) string {
		g := bootDisks(t, true, scratch)
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		c := g.dial(ctx)
		out := collect(ctx, t, c, agent.Stdout)
		if err := c.Start(ctx, agent.Spec{Image: agent.ImageConfig{Cmd: []string{"sh", "-c", script}}}); err != nil {
			t.Fatal(err)
		}
		if st, err := c.Wait(ctx); err != nil || st.Code != 0 {
			t.Fatalf("service: %+v, %v", st, err)
		}
		g.waitPoweroff(20 * time.Second)
		return out.wait(t)
	}
	run("echo kept > /kept; rm /bin/vi; echo changed > /etc/motd")
	// The guest left the scratch disk clean: no journal to recover.
	if out, err := exec.Command("dumpe2fs", "-h", scratch).CombinedOutput(); err != nil {
		t.Errorf("dumpe2fs: %v\n%s", err, out)
	} else if strings.Contains(string(out), "needs_recovery") {
		t.Error("the scratch disk needs journal recovery after power-off: it was not left read-only")
	}
	if out, err := exec.Command("e2fsck", "-fn", scratch).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn of the scratch disk after power-off: %v\n%s", err, out)
	}
	if out := run("cat /kept /etc/motd; test -e /bin/vi || echo vi gone; test -e /tmp/x || echo tmp empty; touch /tmp/x"); out != "kept\nchanged\nvi gone\ntmp empty\n" {
		t.Errorf("second boot saw %q", out)
	}
}

// TestExitWhileDisconnected: the service exits while no host is connected
// (a supervisor restarting); the next host finds the exit status and the
// output, and the guest powers off once it has taken them.
func TestExitWhileDisconnected(t *testing.T) {
	t.Parallel()
	g := boot(t, true)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := g.dial(ctx)
	if err := c.Start(ctx, agent.Spec{Image: agent.ImageConfig{Cmd: []string{"sh", "-c", "sleep 0.5; echo done; exit 9"}}}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	time.Sleep(2 * time.Second)
	select {
	case <-g.exited:
		t.Fatal("the guest powered off before a host took the exit status")
	default:
	}
	c = g.dial(ctx)
	st, err := c.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Phase != agent.PhaseExited || st.Exit == nil || st.Exit.Code != 9 {
		t.Errorf("status after the exit: %+v", st)
	}
	out := collect(ctx, t, c, agent.Stdout)
	if s := out.wait(t); s != "done\n" {
		t.Errorf("output kept while disconnected: %q", s)
	}
	if err := c.Signal(ctx, "TERM"); !errors.Is(err, agent.ErrExited) {
		t.Errorf("signal after the exit: %v, want ErrExited", err)
	}
	exit, err := c.Wait(ctx)
	if err != nil || exit.Code != 9 {
		t.Errorf("Wait: %+v, %v", exit, err)
	}
	g.waitPoweroff(20 * time.Second)
}
