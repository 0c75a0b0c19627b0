package main_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/term"

	"github.com/vmcompose/vmcompose/internal/testenv"
	"github.com/vmcompose/vmcompose/internal/testimage"
	"github.com/vmcompose/vmcompose/network/netproc"
	"github.com/vmcompose/vmcompose/oci"
	"github.com/vmcompose/vmcompose/vm/kernel"
)

// vmEnv is what a test that boots VMs needs: QEMU and the guest kernel
// that `vmcompose setup` put into the user's store. CI runs setup first,
// so there a missing piece fails the test.
func vmEnv(t testing.TB) []string {
	t.Helper()
	testenv.LookPath(t, "qemu-system-x86_64", "run make setup")
	dir, err := oci.DefaultDir()
	if err != nil {
		t.Fatal(err)
	}
	k, err := kernel.Find(dir)
	if err != nil {
		testenv.Missing(t, "no guest kernel: %v (run make setup)", err)
	}
	return []string{"VMCOMPOSE_KERNEL=" + k.Dir}
}

// runProject is a project dir, a store and a state dir of its own, and a
// registry serving the test images.
type runProject struct {
	t        testing.TB
	dir, env []string
	home     string
	reg      string
}

func newRunProject(t testing.TB) *runProject {
	env := vmEnv(t)
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	home := t.TempDir()
	return &runProject{t: t, home: home, reg: strings.TrimPrefix(srv.URL, "http://"),
		env: append(env, "VMCOMPOSE_HOME="+home, "XDG_STATE_HOME="+filepath.Join(home, "state"))}
}

// push stores img in the registry as repo:1 and returns its reference.
func (p *runProject) push(repo string, img v1.Image) string {
	ref := p.reg + "/" + repo + ":1"
	tag, err := name.NewTag(ref)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := remote.Write(tag, img); err != nil {
		p.t.Fatal(err)
	}
	return ref
}

// cmd prepares vmcompose with compose (a compose.yaml) in a project dir.
func (p *runProject) cmd(compose string, args ...string) *exec.Cmd {
	return p.cmdIn(filepath.Join(p.home, "project"), compose, "quiet", args...)
}

// cmdIn prepares vmcompose with --progress progress in the project
// directory dir, made with compose as its compose.yaml when compose is not
// empty.
func (p *runProject) cmdIn(dir, compose, progress string, args ...string) *exec.Cmd {
	os.MkdirAll(dir, 0o755)
	if compose != "" {
		if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(compose), 0o644); err != nil {
			p.t.Fatal(err)
		}
	}
	return vmcompose(dir, p.env, append([]string{"--progress", progress}, args...)...)
}

func (p *runProject) run(compose string, args ...string) (stdout, stderr string, code int) {
	p.t.Helper()
	return output(p.t, p.cmd(compose, args...))
}

// configured is busybox with an image config that compose fields override.
func configured(t *testing.T) v1.Image {
	img := testimage.Busybox(t)
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.Config.Entrypoint = []string{"/bin/sh", "-c"}
	cfg.Config.Cmd = []string{`echo "cmd user=$(id -u):$(id -g) dir=$(pwd) img=$IMG over=$OVER"`}
	cfg.Config.Env = []string{"PATH=/bin:/usr/bin:/sbin:/usr/sbin", "IMG=image", "OVER=image"}
	cfg.Config.User = "65534"
	cfg.Config.WorkingDir = "/tmp"
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// TestRunServices boots real VMs with vmcompose run and checks that a
// service runs the way a container runtime would run it.
func TestRunServices(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("configured", configured(t))
	base := "services:\n  svc:\n    image: " + ref + "\n"
	for _, tc := range []struct {
		name, compose string
		args          []string
		stdout        string
		code          int
	}{{
		name:    "image entrypoint, cmd, env, user and working dir",
		compose: base,
		stdout:  "cmd user=65534:65534 dir=/tmp img=image over=image\n",
	}, {
		name: "compose fields override the image",
		compose: base + `    command: ['echo "compose user=$$(id -u):$$(id -g) dir=$$(pwd) img=$$IMG over=$$OVER"']
    environment: {OVER: compose}
    user: "1000:1000"
    working_dir: /srv
`,
		stdout: "compose user=1000:1000 dir=/srv img=image over=compose\n",
	}, {
		name:    "run arguments override compose",
		compose: base + "    environment: {OVER: compose}\n",
		args:    []string{"-e", "OVER=flag", "--entrypoint", "/bin/sh -c", "svc", `echo "$OVER $(id -un)"`},
		stdout:  "flag nobody\n",
	}, {
		name:    "exit code",
		compose: base,
		args:    []string{"svc", "exit 3"},
		code:    3,
	}, {
		name:    "sysctls are set in the guest kernel",
		compose: base + "    user: root\n    sysctls: {net.ipv4.ip_forward: 1, kernel.domainname: vmc.test}\n",
		args:    []string{"svc", "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/domainname"},
		stdout:  "1\nvmc.test\n",
	}, {
		name:    "zombies are reaped",
		compose: base,
		args:    []string{"svc", "sh -c 'sleep 0.2 & exec true' ; sleep 1; ps -o stat | grep -c '^Z' || true"},
		stdout:  "0\n",
	}, {
		name:    "a VM without a NIC loads no NIC driver",
		compose: base + "    network_mode: none\n",
		args:    []string{"svc", "test -d /sys/module/virtio_blk && test ! -e /sys/module/virtio_net && ! test -e /sys/class/net/eth0 && echo ok"},
		stdout:  "ok\n",
	}, {
		name:    "a run joins the service's network",
		compose: base,
		args:    []string{"svc", "test -e /sys/class/net/eth0 && grep -q ^nameserver /etc/resolv.conf && echo ok"},
		stdout:  "ok\n",
	}, {
		name:    "-u and -w override user and working dir",
		compose: base + "    user: \"1000\"\n    working_dir: /srv\n",
		args:    []string{"-u", "root", "-w", "/etc", "svc", `echo "$(id -u) $(pwd)"`},
		stdout:  "0 /etc\n",
	}, {
		name:    "flags after SERVICE belong to the command",
		compose: base,
		args:    []string{"--entrypoint", `printf '%s\n'`, "svc", "-e", "X=1", "-T", "--rm"},
		stdout:  "-e\nX=1\n-T\n--rm\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if args == nil {
				args = []string{"svc"}
			}
			stdout, stderr, code := p.run(tc.compose, append([]string{"run", "--rm"}, args...)...)
			if code != tc.code || stdout != tc.stdout {
				t.Errorf("exit %d, stdout %q; want %d, %q\nstderr: %s", code, stdout, tc.code, tc.stdout, stderr)
			}
		})
	}
	// Every service of one image shares one root filesystem file, and
	// --rm left no VM behind.
	files, _ := filepath.Glob(filepath.Join(p.home, "rootfs", "*.ext4"))
	if len(files) != 1 {
		t.Errorf("root filesystem images: %v, want one", files)
	}
	vms, _ := os.ReadDir(filepath.Join(p.home, "state", "vmcompose", "project", "vms"))
	if len(vms) != 0 {
		t.Errorf("VMs left after run --rm: %v", vms)
	}
}

// TestRunWritableLayer: what a service writes survives stop and start of
// its VM and is gone once the VM is recreated, as a container's layer is.
func TestRunWritableLayer(t *testing.T) {
	p := newRunProject(t)
	compose := "services:\n  svc:\n    image: " + p.push("busybox", testimage.Busybox(t)) + "\n"
	steps := []struct {
		args   []string
		stdout string
	}{
		{[]string{"run", "--name", "keep", "svc", "sh", "-c", "echo kept > /etc/mark; cat /etc/mark"}, "kept\n"},
		{[]string{"run", "--rm", "--name", "keep", "svc", "cat", "/etc/mark"}, "kept\n"},
		{[]string{"run", "--rm", "--name", "keep", "svc", "sh", "-c", "cat /etc/mark 2>/dev/null || echo gone"}, "gone\n"},
	}
	for i, s := range steps {
		stdout, stderr, code := p.run(compose, s.args...)
		if code != 0 || stdout != s.stdout {
			t.Fatalf("step %d: exit %d, stdout %q, want %q\nstderr: %s", i, code, stdout, s.stdout, stderr)
		}
	}
}

// TestRunStopSignal: a SIGTERM to vmcompose run reaches the service, whose
// trap runs, and its exit status becomes vmcompose's.
func TestRunStopSignal(t *testing.T) {
	p := newRunProject(t)
	compose := "services:\n  svc:\n    image: " + p.push("busybox", testimage.Busybox(t)) + "\n"
	c := p.cmd(compose, "run", "--rm", "svc", "sh", "-c", "trap 'echo trapped; exit 7' TERM; echo ready; while true; do sleep 0.1; done")
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(out, buf); err != nil || string(buf) != "ready\n" {
		t.Fatalf("read %q, %v; stderr: %s", buf, err, stderr.String())
	}
	c.Process.Signal(syscall.SIGTERM)
	rest, _ := io.ReadAll(out)
	err = c.Wait()
	if string(rest) != "trapped\n" {
		t.Errorf("after SIGTERM the service printed %q; stderr: %s", rest, stderr.String())
	}
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Errorf("exit: %v, want status 7", err)
	}
}

// TestRunBrokenImage: a missing or unrunnable command or an unknown user
// fails with an error naming the service and docker run's exit status,
// and no VM keeps running.
func TestRunBrokenImage(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	for _, tc := range []struct {
		compose, want string
		code          int // docker run's: 127 not found, 126 cannot be run
	}{
		{"services:\n  svc:\n    image: " + ref + "\n    entrypoint: [/no/such/program]\n", "/no/such/program", 127},
		{"services:\n  svc:\n    image: " + ref + "\n    command: [no-such-program]\n", "no-such-program", 127},
		{"services:\n  svc:\n    image: " + ref + "\n    entrypoint: [/etc]\n", "/etc", 126},
		{"services:\n  svc:\n    image: " + ref + "\n    user: nosuchuser\n    command: [\"true\"]\n", "nosuchuser", 1},
	} {
		start := time.Now()
		_, stderr, code := p.run(tc.compose, "run", "--rm", "svc")
		if code != tc.code || !strings.Contains(stderr, `service "svc": `) || !strings.Contains(stderr, tc.want) {
			t.Errorf("exit %d, stderr %q; want %d and an error naming the service and %q", code, stderr, tc.code, tc.want)
		}
		if out, _ := exec.Command("pgrep", "-f", p.home).Output(); len(out) > 0 {
			t.Errorf("processes left running after a failed run (%s): %s", time.Since(start), out)
		}
	}
}

// background starts vmcompose in dir and returns once it printed a first
// line on stdout that begins with first; out has the rest. The caller
// waits for c.
func (p *runProject) background(dir, first string, args ...string) (c *exec.Cmd, out io.Reader, stderr *bytes.Buffer) {
	p.t.Helper()
	c = p.cmdIn(dir, "", "quiet", args...)
	stderr = new(bytes.Buffer)
	c.Stderr = stderr
	pipe, err := c.StdoutPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		p.t.Fatal(err)
	}
	br := bufio.NewReader(pipe)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, first) {
		c.Process.Kill()
		c.Wait()
		p.t.Fatalf("%v: read %q, %v; want a line that begins %q\n%s", args, line, err, first, stderr)
	}
	return c, br, stderr
}

// TestRunStdin: stdin reaches the command (docker compose run's -i is on by
// default), and -i=false gives it none.
func TestRunStdin(t *testing.T) {
	p := newRunProject(t)
	compose := "services:\n  svc:\n    image: " + p.push("busybox", testimage.Busybox(t)) + "\n    network_mode: none\n"
	for _, tc := range []struct {
		args   []string
		stdout string
	}{
		{[]string{"run", "--rm", "-T", "svc", "cat"}, "hi\nthere\n"},
		{[]string{"run", "--rm", "-i=false", "svc", "sh", "-c", "cat; echo end"}, "end\n"},
	} {
		c := p.cmd(compose, tc.args...)
		c.Stdin = strings.NewReader("hi\nthere\n")
		var stdout, stderr bytes.Buffer
		c.Stdout, c.Stderr = &stdout, &stderr
		if err := c.Run(); err != nil || stdout.String() != tc.stdout {
			t.Errorf("%v with stdin: %v, stdout %q, want %q\nstderr: %s", tc.args, err, stdout.String(), tc.stdout, stderr.String())
		}
	}
}

// TestRunTerminal drives `vmcompose run svc` through a real pseudo-terminal,
// as a person at a shell would: the service gets a terminal of the same
// size that follows a resize, typed lines run, Ctrl-C interrupts the
// guest's foreground process (a keystroke, not a signal to vmcompose), and
// the shell's exit status is vmcompose's. The host terminal is back in its
// mode afterwards.
func TestRunTerminal(t *testing.T) {
	p := newRunProject(t)
	compose := "services:\n  svc:\n    image: " + p.push("busybox", testimage.Busybox(t)) + "\n    network_mode: none\n"
	c := p.cmd(compose, "run", "--rm", "svc", "sh")
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	pty.Setsize(ptmx, &pty.Winsize{Rows: 30, Cols: 100})
	before, err := term.GetState(int(tty.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	c.Stdin, c.Stdout, c.Stderr = tty, tty, tty
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var screen bytes.Buffer
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := ptmx.Read(buf)
			mu.Lock()
			screen.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	// expect waits until the screen shows want after what it showed so far.
	seen := 0
	expect := func(want string) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for time.Now().Before(deadline) {
			mu.Lock()
			s := screen.String()
			mu.Unlock()
			if i := strings.Index(s[seen:], want); i >= 0 {
				seen += i + len(want)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		mu.Lock()
		defer mu.Unlock()
		c.Process.Kill()
		t.Fatalf("the terminal did not show %q; it shows:\n%q", want, screen.String())
	}
	expect("# ")
	ptmx.WriteString("echo $((6*7))\r")
	expect("42\r\n")
	ptmx.WriteString("stty size\r")
	expect("30 100\r\n")
	pty.Setsize(ptmx, &pty.Winsize{Rows: 40, Cols: 120}) // SIGWINCH to vmcompose
	// The new size reaches the guest a moment later: ask until it shows.
	for i := 0; i < 40; i++ {
		ptmx.WriteString("stty size\r")
		time.Sleep(250 * time.Millisecond)
		mu.Lock()
		resized := strings.Contains(screen.String()[seen:], "40 120\r\n")
		mu.Unlock()
		if resized {
			break
		}
	}
	expect("40 120\r\n")
	ptmx.WriteString("sleep 1000\r")
	expect("sleep 1000")
	time.Sleep(time.Second)
	ptmx.WriteString("\x03") // Ctrl-C
	expect("# ")
	ptmx.WriteString("echo status=$?\r")
	expect("status=130\r\n")
	ptmx.WriteString("exit 5\r")
	err = c.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 5 {
		mu.Lock()
		t.Errorf("exit: %v, want status 5; terminal:\n%q", err, screen.String())
		mu.Unlock()
	}
	after, err := term.GetState(int(tty.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if *after != *before {
		t.Errorf("the terminal's mode was not restored: before %+v, after %+v", *before, *after)
	}
}

// TestRunDependencies: run starts what the service depends on through the
// supervisor, waits until it is healthy, joins its network (the page comes
// by service name) and leaves the dependency running and nothing of its
// own VM behind. --no-deps starts nothing else.
func TestRunDependencies(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	dir := filepath.Join(p.home, "deps")
	state := filepath.Join(p.home, "state", "vmcompose", "deps")
	p.cleanup(dir)
	compose := `services:
  web:
    image: ` + ref + `
    command: ["sh", "-c", "mkdir -p /www && echo hello from web > /www/index.html && exec httpd -f -p 80 -h /www"]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1/"]
      interval: 500ms
      retries: 60
  client:
    image: ` + ref + `
    depends_on:
      web: {condition: service_healthy}
`
	// --no-deps: no supervisor, no VM but the run's, and web does not
	// answer.
	out, stderr, code := p.in(dir, compose, "run", "--rm", "--no-deps", "client", "sh", "-c", "wget -q -T 2 -O- http://web/ || echo no web")
	if code != 0 || out != "no web\n" {
		t.Errorf("run --no-deps: exit %d, %q\n%s", code, out, stderr)
	}
	if sups, vms := supervisors(state), qemus(state); len(sups)+len(vms) != 0 {
		t.Errorf("after run --no-deps: supervisors %v, qemus %v; want none", sups, vms)
	}
	if fileExistsT(filepath.Join(state, "state.json")) {
		t.Errorf("after run --no-deps the project has a state: %v", readState(t, state))
	}

	start := time.Now()
	out, stderr, code = p.in(dir, "", "run", "--rm", "client", "wget", "-q", "-O-", "http://web/")
	if code != 0 || out != "hello from web\n" {
		t.Fatalf("run client fetching http://web/: exit %d, %q\n%s", code, out, stderr)
	}
	t.Logf("run of a service that depends on a healthy one: %s", time.Since(start))
	if ps := p.ps(dir); ps["web"].State != "running" || ps["web"].Health != "healthy" || len(ps) != 1 {
		t.Errorf("after the run, ps: %+v; want web running and healthy, alone", ps)
	}
	if vms := qemus(state); len(vms) != 1 {
		t.Errorf("after the run: qemus %v, want web's alone", vms)
	}
	ping, err := netproc.NewNetworks(state, nil, nil).Ping(t.Context())
	if err != nil || fmt.Sprint(ping.Instances) != "[web-1]" {
		t.Errorf("after the run, the network process has %v attached (%v); want [web-1]", ping, err)
	}
	vms, _ := os.ReadDir(filepath.Join(state, "vms"))
	if len(vms) != 1 || vms[0].Name() != "web-1" {
		t.Errorf("VMs after run --rm: %v, want web-1 alone", vms)
	}
	// A second run finds web up: nothing to start.
	out, stderr, code = p.in(dir, "", "run", "--rm", "client", "sh", "-c", "wget -q -O- http://web/ && wget -q -O- http://deps-web-1/")
	if code != 0 || out != "hello from web\nhello from web\n" {
		t.Errorf("second run: exit %d, %q\n%s", code, out, stderr)
	}
}

// TestRunPorts: a run publishes the service's ports only with
// --service-ports, others with -p, and unpublishes them when it ends.
func TestRunPorts(t *testing.T) {
	p := newRunProject(t)
	dir := filepath.Join(p.home, "ports")
	p.cleanup(dir)
	port, other := freePort(t), freePort(t)
	os.MkdirAll(dir, 0o755)
	compose := `services:
  web:
    image: ` + p.push("busybox", testimage.Busybox(t)) + `
    ports: ["127.0.0.1:` + port + `:80"]
`
	os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(compose), 0o644)
	// The run serves until the test is done with it: vmcompose passes the
	// SIGTERM on, and the trap ends the service.
	serve := "trap 'exit 0' TERM; mkdir -p /www && echo hello from run > /www/index.html && httpd -p 80 -h /www && echo serving && while true; do sleep 0.1; done"
	for _, tc := range []struct {
		args    []string
		open    string // the port that answers while the run serves
		refused string // one that must not
	}{
		{[]string{"run", "--rm", "web"}, "", port},
		{[]string{"run", "--rm", "--service-ports", "web"}, port, ""},
		{[]string{"run", "--rm", "-p", "127.0.0.1:" + other + ":80", "web"}, other, port},
	} {
		c, out, stderr := p.background(dir, "serving", append(tc.args, "sh", "-c", serve)...)
		get := func(port string) (string, error) {
			hc := http.Client{Timeout: 5 * time.Second}
			resp, err := hc.Get("http://127.0.0.1:" + port + "/")
			if err != nil {
				return "", err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			return string(b), err
		}
		if tc.open != "" {
			if body, err := get(tc.open); err != nil || body != "hello from run\n" {
				t.Errorf("%v: port %s while the run serves: %q, %v", tc.args, tc.open, body, err)
			}
		}
		if tc.refused != "" {
			if body, err := get(tc.refused); err == nil {
				t.Errorf("%v: port %s answers %q; want it unpublished", tc.args, tc.refused, body)
			}
		}
		c.Process.Signal(syscall.SIGTERM)
		io.Copy(io.Discard, out)
		if err := c.Wait(); err != nil {
			t.Errorf("%v: %v\n%s", tc.args, err, stderr.String())
		}
		if tc.open != "" {
			if body, err := get(tc.open); err == nil {
				t.Errorf("%v: port %s answers %q after the run; want it unpublished", tc.args, tc.open, body)
			}
		}
	}
}

// TestRunOutlivesSupervisor: a supervisor that exits (here after a down)
// leaves the network process to a run VM that still uses it, and the run
// ends it when it ends.
func TestRunOutlivesSupervisor(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	dir := filepath.Join(p.home, "outlive")
	state := filepath.Join(p.home, "state", "vmcompose", "outlive")
	p.cleanup(dir)
	compose := "services:\n  web:\n    image: " + ref + "\n    command: [sleep, \"1000\"]\n  probe:\n    image: " + ref + "\n"
	if _, stderr, code := p.in(dir, compose, "up", "-d", "--wait", "web"); code != 0 {
		t.Fatalf("up: exit %d\n%s", code, stderr)
	}
	c, out, stderr := p.background(dir, "started", "run", "--rm", "--name", "probe", "probe", "sh", "-c",
		"echo started; sleep 8; nslookup outlive-probe >/dev/null && echo network ok")
	if _, stderr, code := p.in(dir, "", "down", "-t", "0"); code != 0 {
		t.Fatalf("down: exit %d\n%s", code, stderr)
	}
	if left := waitGone(supervisors, state); len(left) != 0 {
		t.Errorf("supervisor %v still runs after down", left)
	}
	ping, err := netproc.NewNetworks(state, nil, nil).Ping(t.Context())
	if err != nil || fmt.Sprint(ping.Instances) != "[probe]" {
		t.Errorf("after down, while the run goes on: network process %+v, %v; want probe attached", ping, err)
	}
	rest, _ := io.ReadAll(out)
	if err := c.Wait(); err != nil || string(rest) != "network ok\n" {
		t.Errorf("run: %v, printed %q after down; want its network to work\n%s", err, rest, stderr.String())
	}
	if left := waitGone(networkProcs, state); len(left) != 0 {
		t.Errorf("network process %v left after the run ended", left)
	}
}

// TestRunKilled: a run whose vmcompose is killed takes its VM along, and
// the next run detaches it from the network, freeing its address.
func TestRunKilled(t *testing.T) {
	p := newRunProject(t)
	dir := filepath.Join(p.home, "killed")
	state := filepath.Join(p.home, "state", "vmcompose", "killed")
	p.cleanup(dir)
	compose := "services:\n  svc:\n    image: " + p.push("busybox", testimage.Busybox(t)) + "\n"
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(compose), 0o644)
	c, _, _ := p.background(dir, "started", "run", "--name", "victim", "svc", "sh", "-c", "echo started; sleep 1000")
	c.Process.Kill()
	c.Wait()
	if left := waitGone(qemus, state); len(left) != 0 {
		t.Fatalf("qemu %v outlived its killed vmcompose run", left)
	}
	nets := netproc.NewNetworks(state, nil, nil)
	if ping, err := nets.Ping(t.Context()); err != nil || fmt.Sprint(ping.Instances) != "[victim]" {
		t.Fatalf("after the kill: network process %+v, %v; want victim still attached", ping, err)
	}
	if out, stderr, code := p.in(dir, "", "run", "--rm", "svc", "true"); code != 0 {
		t.Fatalf("next run: exit %d, %q\n%s", code, out, stderr)
	}
	if left := waitGone(networkProcs, state); len(left) != 0 {
		ping, err := nets.Ping(t.Context())
		t.Errorf("after the next run the network process %v runs on: %+v, %v", left, ping, err)
	}
}

// TestRunVolumeFlag: -v adds a bind mount (a relative source is the
// current directory's) or a named volume to the run's VM.
func TestRunVolumeFlag(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("QEMU's virtiofsd needs root")
	}
	p := newRunProject(t)
	compose := "services:\n  svc:\n    image: " + p.push("busybox", testimage.Busybox(t)) + "\n    network_mode: none\nvolumes:\n  data: {}\n"
	host := filepath.Join(p.home, "project", "shared")
	os.MkdirAll(host, 0o755)
	os.WriteFile(filepath.Join(host, "f"), []byte("from the host\n"), 0o644)
	for _, tc := range []struct {
		args   []string
		stdout string
	}{
		{[]string{"run", "--rm", "-v", "./shared:/x", "-v", "data:/data", "svc", "sh", "-c", "cat /x/f; echo kept > /data/f; echo back > /x/g"}, "from the host\n"},
		{[]string{"run", "--rm", "-v", "data:/data", "svc", "cat", "/data/f"}, "kept\n"},
	} {
		stdout, stderr, code := p.run(compose, tc.args...)
		if code != 0 || stdout != tc.stdout {
			t.Errorf("%v: exit %d, stdout %q; want %q\nstderr: %s", tc.args, code, stdout, tc.stdout, stderr)
		}
	}
	if b, err := os.ReadFile(filepath.Join(host, "g")); err != nil || string(b) != "back\n" {
		t.Errorf("what the run wrote into its bind mount: %q, %v", b, err)
	}
}
