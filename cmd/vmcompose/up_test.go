package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

// psEntry is the part of a `ps --format json` line the tests read.
type psEntry struct {
	ID, Name, Service, State, Health, StartedAt, Status string
	ExitCode                                            int
	Pid                                                 int
}

// in runs vmcompose in the project directory dir (made with compose as its
// compose.yaml when compose is not empty).
func (p *runProject) in(dir, compose string, args ...string) (stdout, stderr string, code int) {
	p.t.Helper()
	return p.inWith(dir, compose, "quiet", args...)
}

// inWith is in with --progress progress.
func (p *runProject) inWith(dir, compose, progress string, args ...string) (stdout, stderr string, code int) {
	p.t.Helper()
	return output(p.t, p.cmdIn(dir, compose, progress, args...))
}

func (p *runProject) ps(dir string) map[string]psEntry {
	p.t.Helper()
	out, stderr, code := p.in(dir, "", "ps", "-a", "--format", "json")
	if code != 0 {
		p.t.Fatalf("ps: exit %d: %s", code, stderr)
	}
	m := map[string]psEntry{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e psEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			p.t.Fatalf("ps line %q: %v", line, err)
		}
		m[e.Service] = e
	}
	return m
}

// pidsWhere lists the processes for which keep, given the pid and the
// command line, says yes.
func pidsWhere(keep func(pid int, cmdline []byte) bool) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && keep(pid, b) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// qemus lists the qemu processes whose command line mentions dir.
func qemus(dir string) []int {
	return pidsWhere(func(pid int, b []byte) bool {
		if !bytes.Contains(b, []byte("qemu-system")) {
			return false
		}
		if bytes.Contains(b, []byte(dir)) {
			return true
		}
		// qemu runs in the VM's directory with relative paths.
		cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		return err == nil && strings.HasPrefix(cwd, dir)
	})
}

// supervisors lists the supervisor processes of state dirs under dir.
func supervisors(dir string) []int {
	return pidsWhere(func(_ int, b []byte) bool {
		return bytes.Contains(b, []byte("supervise\x00")) && bytes.Contains(b, []byte(dir))
	})
}

// networkProcs lists the network processes of state dirs under dir.
func networkProcs(dir string) []int {
	return pidsWhere(func(_ int, b []byte) bool {
		return bytes.Contains(b, []byte("\x00network\x00--state-dir\x00")) && bytes.Contains(b, []byte(dir))
	})
}

// waitGone waits up to 10 s for list(dir) to be empty and returns what is
// left.
func waitGone(list func(string) []int, dir string) []int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := list(dir)
		if len(left) == 0 || time.Now().After(deadline) {
			return left
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cleanup takes the projects down and kills whatever a failed test left.
// A down ends the project's network process.
func (p *runProject) cleanup(dirs ...string) {
	p.t.Cleanup(func() {
		for _, d := range dirs {
			p.in(d, "", "down", "-t", "0")
		}
		// A supervisor that a down left with nothing to run ends the
		// network process as it exits: killing it first would leave that.
		for _, pid := range waitGone(supervisors, p.home) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		for _, pid := range waitGone(networkProcs, p.home) {
			p.t.Errorf("network process %d left running", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
		for _, pid := range qemus(p.home) {
			p.t.Errorf("qemu process %d left running", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
}

// TestUpLifecycle: up -d --wait of a job, a service with a healthcheck and
// one that depends on both; convergence; logs, exec, stop/start; down of
// one project leaves another alone.
func TestUpLifecycle(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	dir := filepath.Join(p.home, "one")
	other := filepath.Join(p.home, "two")
	p.cleanup(dir, other)
	compose := func(env string) string {
		return `services:
  job:
    image: ` + ref + `
    command: ["sh", "-c", "echo job ran; exit 0"]
  db:
    image: ` + ref + `
    command: ["sh", "-c", "echo db starting; sleep 2; touch /tmp/ready; echo db ready; exec sleep 1000"]
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 500ms
      retries: 60
  web:
    image: ` + ref + `
    command: ["sh", "-c", "echo web up; exec sleep 1000"]
    stop_grace_period: 1s
    environment: {LEVEL: "` + env + `"}
    depends_on:
      db: {condition: service_healthy}
      job: {condition: service_completed_successfully}
`
	}
	start := time.Now()
	if _, stderr, code := p.in(dir, compose("1"), "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up -d --wait: exit %d\n%s", code, stderr)
	}
	t.Logf("up -d --wait of 3 services: %s", time.Since(start))
	ps := p.ps(dir)
	if ps["db"].State != "running" || ps["db"].Health != "healthy" || ps["web"].State != "running" ||
		ps["job"].State != "exited" || ps["job"].ExitCode != 0 {
		t.Fatalf("ps after up: %+v", ps)
	}
	// web started only once db was healthy (2 s after its start) and the
	// job had completed.
	st := readState(t, filepath.Join(p.home, "state", "vmcompose", "one"))
	webStart, _ := time.Parse(time.RFC3339Nano, ps["web"].StartedAt)
	dbStart, _ := time.Parse(time.RFC3339Nano, ps["db"].StartedAt)
	if !webStart.After(st["job"].FinishedAt) || webStart.Sub(dbStart) < 2*time.Second {
		t.Errorf("web started at %s; job finished at %s, db started at %s", webStart, st["job"].FinishedAt, dbStart)
	}

	// plan sees what runs: the job, which has exited, would run again.
	plan, _, _ := p.in(dir, "", "plan")
	for _, want := range []string{"nothing  db-1", "nothing  web-1", "start    job-1"} {
		if !strings.Contains(strings.Join(strings.Fields(plan), "  "), strings.Join(strings.Fields(want), "  ")) {
			t.Errorf("plan after up lacks %q:\n%s", want, plan)
		}
	}

	start = time.Now()
	if _, stderr, code := p.in(dir, compose("1"), "up", "-d"); code != 0 {
		t.Fatalf("second up -d: exit %d\n%s", code, stderr)
	}
	t.Logf("second up -d (nothing changed but the job reruns): %s", time.Since(start))
	again := p.ps(dir)
	if again["db"].Pid != ps["db"].Pid || again["web"].Pid != ps["web"].Pid || again["db"].Pid == 0 {
		t.Errorf("second up restarted VMs: before %+v, after %+v", ps, again)
	}

	if _, stderr, code := p.in(dir, compose("2"), "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up -d after a change: exit %d\n%s", code, stderr)
	}
	changed := p.ps(dir)
	if changed["db"].Pid != ps["db"].Pid || changed["web"].Pid == ps["web"].Pid || changed["web"].State != "running" {
		t.Errorf("changing web's environment: before %+v, after %+v", ps, changed)
	}

	if out, stderr, code := p.in(dir, "", "logs", "--no-log-prefix"); code != 0 ||
		!strings.Contains(out, "web up") || !strings.Contains(out, "db ready") || !strings.Contains(out, "job ran") {
		t.Errorf("logs: exit %d, stdout %q, stderr %s", code, out, stderr)
	}
	if out, _, _ := p.in(dir, "", "logs", "-t", "web"); !strings.Contains(out, "web-1 | 20") || strings.Contains(out, "db ready") {
		t.Errorf("logs -t web: %q", out)
	}

	if out, stderr, code := p.in(dir, "", "exec", "-T", "web", "sh", "-c", "echo $LEVEL; echo kept > /etc/mark; exit 3"); code != 3 || out != "2\n" {
		t.Errorf("exec: exit %d, stdout %q, stderr %s", code, out, stderr)
	}
	// With a terminal, exec gives the process one, of the same size.
	c := p.cmdIn(dir, "", "quiet", "exec", "web", "sh", "-c", "tty; stty size")
	ptmx, err := pty.StartWithSize(c, &pty.Winsize{Rows: 30, Cols: 100})
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(ptmx) // until vmcompose, the terminal's last user, exits
	ptmx.Close()
	if err := c.Wait(); err != nil || !strings.Contains(string(out), "/dev/pts/") || !strings.Contains(string(out), "30 100") {
		t.Errorf("exec with a terminal: %v, output %q", err, out)
	}
	if _, stderr, code := p.in(dir, "", "stop", "web"); code != 0 {
		t.Fatalf("stop: %d %s", code, stderr)
	}
	if e := p.ps(dir)["web"]; e.State != "exited" {
		t.Errorf("after stop web: %+v", e)
	}
	if _, stderr, code := p.in(dir, "", "start", "web"); code != 0 {
		t.Fatalf("start: %d %s", code, stderr)
	}
	if out, stderr, code := p.in(dir, "", "exec", "-T", "web", "cat", "/etc/mark"); code != 0 || out != "kept\n" {
		t.Errorf("the writable layer after stop and start: exit %d, %q, %s", code, out, stderr)
	}
	for cmd, want := range map[string]int{"no-such-program": 127, "/etc": 126} {
		if _, stderr, code := p.in(dir, "", "exec", "-T", "web", cmd); code != want {
			t.Errorf("exec %s: exit %d, want %d (docker's); stderr: %s", cmd, code, want, stderr)
		}
	}

	if out, stderr, code := p.in(dir, "", "top", "web"); code != 0 || !strings.Contains(out, "web-1") || !strings.Contains(out, "sleep 1000") {
		t.Errorf("top: exit %d, %q, %s", code, out, stderr)
	}
	before := p.ps(dir)["web"]
	if _, stderr, code := p.in(dir, "", "restart", "-t", "1", "web"); code != 0 {
		t.Fatalf("restart: %d %s", code, stderr)
	}
	if e := p.ps(dir)["web"]; e.State != "running" || e.Pid == before.Pid {
		t.Errorf("restart: before %+v, after %+v", before, e)
	}
	if _, stderr, code := p.in(dir, "", "kill", "-s", "KILL", "web"); code != 0 {
		t.Fatalf("kill: %d %s", code, stderr)
	}
	deadline := time.Now().Add(30 * time.Second)
	for e := p.ps(dir)["web"]; e.State != "exited" || e.ExitCode != 137; e = p.ps(dir)["web"] {
		if time.Now().After(deadline) {
			t.Fatalf("web after kill: %+v", e)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A second project runs beside the first; down of the first leaves it.
	if _, stderr, code := p.in(other, "services:\n  solo:\n    image: "+ref+"\n    command: [sleep, '1000']\n", "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up of a second project: %d %s", code, stderr)
	}
	if _, stderr, code := p.in(dir, "", "down", "-t", "1"); code != 0 {
		t.Fatalf("down: %d %s", code, stderr)
	}
	oneState := filepath.Join(p.home, "state", "vmcompose", "one")
	left, _ := filepath.Glob(filepath.Join(oneState, "vms", "*"))
	scratch, _ := filepath.Glob(filepath.Join(oneState, "vms", "*", "scratch.img"))
	if len(left) != 0 || len(scratch) != 0 || fileExistsT(filepath.Join(oneState, "supervisor.sock")) {
		t.Errorf("after down: VMs %v, scratch disks %v, socket left: %v", left, scratch, fileExistsT(filepath.Join(oneState, "supervisor.sock")))
	}
	if e := p.ps(other)["solo"]; e.State != "running" {
		t.Errorf("the other project after down of the first: %+v", e)
	}
	if n := len(qemus(filepath.Join(p.home, "state", "vmcompose", "two"))); n != 1 {
		t.Errorf("qemu processes of the other project: %d, want 1", n)
	}
	if n := len(qemus(oneState)); n != 0 {
		t.Errorf("qemu processes of the project taken down: %d", n)
	}
}

func fileExistsT(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

type stateEntry struct {
	Service    string
	FinishedAt time.Time `json:"finished_at"`
}

func readState(t *testing.T, dir string) map[string]stateEntry {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s struct{ Instances []stateEntry }
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatalf("state.json: %v", err)
	}
	m := map[string]stateEntry{}
	for _, in := range s.Instances {
		m[in.Service] = in
	}
	return m
}

// TestUpWaitFailures: an unhealthy service and a failed job make up --wait
// fail, naming the service and showing its log.
func TestUpWaitFailures(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	sick := filepath.Join(p.home, "sick")
	job := filepath.Join(p.home, "job")
	p.cleanup(sick, job)
	_, stderr, code := p.in(sick, `services:
  sick:
    image: `+ref+`
    command: ["sh", "-c", "echo sick says hello; exec sleep 1000"]
    healthcheck:
      test: ["CMD-SHELL", "exit 1"]
      interval: 300ms
      retries: 2
`, "up", "-d", "--wait")
	if code == 0 || !strings.Contains(stderr, `service "sick"`) || !strings.Contains(stderr, "unhealthy") || !strings.Contains(stderr, "sick says hello") {
		t.Errorf("up --wait of an unhealthy service: exit %d, stderr:\n%s", code, stderr)
	}
	_, stderr, code = p.in(job, `services:
  migrate:
    image: `+ref+`
    command: ["sh", "-c", "echo migration broke; exit 1"]
  app:
    image: `+ref+`
    command: [sleep, "1000"]
    depends_on:
      migrate: {condition: service_completed_successfully}
`, "up", "-d", "--wait")
	if code == 0 || !strings.Contains(stderr, `service "migrate"`) || !strings.Contains(stderr, "exit code 1") || !strings.Contains(stderr, "migration broke") {
		t.Errorf("up --wait with a failed job: exit %d, stderr:\n%s", code, stderr)
	}
	if e := p.ps(job)["app"]; e.State == "running" {
		t.Errorf("app started although its dependency failed: %+v", e)
	}
}

// TestUpAdoption: a supervisor killed in the middle of up is replaced by
// the next command, which adopts the VMs; two ups at once converge; a
// killed VM comes back by its restart policy.
func TestUpAdoption(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	dir := filepath.Join(p.home, "adopt")
	state := filepath.Join(p.home, "state", "vmcompose", "adopt")
	p.cleanup(dir)
	compose := `services:
  a:
    image: ` + ref + `
    command: ["sh", "-c", "mkdir -p /www && echo hello from a > /www/index.html && echo a && exec httpd -f -p 80 -h /www"]
    restart: always
  b:
    image: ` + ref + `
    command: ["sh", "-c", "echo b; exec sleep 1000"]
    depends_on: [a]
`
	c := p.cmdIn(dir, compose, "quiet", "up", "-d", "--wait")
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill the supervisor as soon as b's qemu exists: before the driver
	// may have recorded its pid, which the driver recovers from qemu's
	// pidfile.
	deadline := time.Now().Add(60 * time.Second)
	for len(qemus(filepath.Join(state, "vms", "b-1"))) == 0 && time.Now().Before(deadline) {
		time.Sleep(2 * time.Millisecond)
	}
	sups := supervisors(state)
	if len(sups) != 1 {
		t.Fatalf("supervisors: %v, want one", sups)
	}
	syscall.Kill(sups[0], syscall.SIGKILL)
	if err := c.Wait(); err == nil {
		t.Errorf("up ended well although its supervisor was killed during it")
	}

	// Two ups at once: one supervisor, each up waits for the other.
	type result struct {
		code   int
		stderr string
	}
	results := make(chan result, 2)
	for range 2 {
		go func() {
			_, stderr, code := p.in(dir, "", "up", "-d", "--wait")
			results <- result{code, stderr}
		}()
	}
	for range 2 {
		if r := <-results; r.code != 0 {
			t.Errorf("concurrent up: exit %d: %s", r.code, r.stderr)
		}
	}
	if n := len(supervisors(state)); n != 1 {
		t.Errorf("supervisors after two ups: %d, want 1", n)
	}
	ps := p.ps(dir)
	if ps["a"].State != "running" || ps["b"].State != "running" {
		for _, f := range []string{"b-1/run.json", "b-1/qemu.pid", "b-1/exit.json"} {
			b, _ := os.ReadFile(filepath.Join(state, "vms", f))
			t.Logf("%s: %s", f, b)
		}
		b, _ := os.ReadFile(filepath.Join(state, "supervisor.log"))
		t.Logf("supervisor log:\n%s", b)
		t.Fatalf("ps after adoption: %+v", ps)
	}
	if pids := qemus(state); len(pids) != 2 {
		t.Errorf("qemu processes after adoption: %v, want 2", pids)
	}

	// restart: always brings a killed VM back.
	syscall.Kill(ps["a"].Pid, syscall.SIGKILL)
	deadline = time.Now().Add(60 * time.Second)
	for {
		e := p.ps(dir)["a"]
		if e.State == "running" && e.Pid != ps["a"].Pid {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a was not restarted after its VM was killed: %+v", e)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if e := p.ps(dir)["b"]; e.Pid != ps["b"].Pid {
		t.Errorf("b was restarted too: %+v", e)
	}

	// --scale adds a replica and leaves the first one alone.
	if _, stderr, code := p.in(dir, "", "up", "-d", "--wait", "--scale", "b=2"); code != 0 {
		t.Fatalf("up --scale b=2: %d %s", code, stderr)
	}
	out, _, _ := p.in(dir, "", "ps", "--format", "json")
	if !strings.Contains(out, `"ID":"b-2"`) || strings.Count(out, `"State":"running"`) != 3 {
		t.Errorf("ps after --scale b=2:\n%s", out)
	}
	if e := p.ps(dir)["b"]; e.ID == "b-1" && e.Pid != ps["b"].Pid {
		t.Errorf("b-1 was restarted by the scale-up: %+v", e)
	}

	// A rebuilt vmcompose replaces the supervisor, which adopts the VMs as
	// they run: the network process outlives supervisors, so their NICs
	// stay connected.
	old := supervisors(state)
	before := qemus(state)
	nets := networkProcs(state)
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(binary, future, future); err != nil {
		t.Fatal(err)
	}
	if _, stderr, code := p.in(dir, "", "up", "-d", "--wait", "--scale", "b=2"); code != 0 {
		t.Fatalf("up with a rebuilt vmcompose: %d %s", code, stderr)
	}
	now := supervisors(state)
	if len(now) != 1 || len(old) != 1 || now[0] == old[0] {
		t.Errorf("supervisors before %v, after %v: want one, replaced", old, now)
	}
	if after := qemus(state); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("qemu processes before %v, after %v: want the same", before, after)
	}
	if after := networkProcs(state); len(nets) != 1 || fmt.Sprint(after) != fmt.Sprint(nets) {
		t.Errorf("network processes before %v, after %v: want the same one", nets, after)
	}
	// b reaches a by its service name on the network kept.
	if out, stderr, code := p.in(dir, "", "exec", "-T", "--index", "1", "b", "timeout", "10", "wget", "-q", "-O", "-", "http://a/"); code != 0 || out != "hello from a\n" {
		t.Errorf("b fetching http://a/ after the supervisor was replaced: exit %d, %q, %s", code, out, stderr)
	}
}

// TestUpSupervisorKilled: a supervisor killed with SIGKILL leaves the VMs
// and their network running: a published port answers meanwhile, and the
// next supervisor adopts the VMs without booting them again. A down ends
// the network process and leaves no socket.
func TestUpSupervisorKilled(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	dir := filepath.Join(p.home, "killed")
	state := filepath.Join(p.home, "state", "vmcompose", "killed")
	p.cleanup(dir)
	port := freePort(t)
	compose := `services:
  web:
    image: ` + ref + `
    command: ["sh", "-c", "mkdir -p /www && echo hello from web > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports: ["127.0.0.1:` + port + `:80"]
    healthcheck:
      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1/"]
      interval: 500ms
      retries: 60
  client:
    image: ` + ref + `
    command: [sleep, "1000"]
    depends_on:
      web: {condition: service_healthy}
`
	start := time.Now()
	if _, stderr, code := p.in(dir, compose, "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up -d --wait: exit %d\n%s", code, stderr)
	}
	t.Logf("up -d --wait of 2 networked services: %s", time.Since(start))
	get := func(when string) {
		t.Helper()
		c := http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get("http://127.0.0.1:" + port + "/")
		if err != nil {
			t.Errorf("published port %s: %v", when, err)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "hello from web\n" {
			t.Errorf("published port %s: %q", when, b)
		}
	}
	byName := func(when string) {
		t.Helper()
		if out, stderr, code := p.in(dir, "", "exec", "-T", "client", "timeout", "10", "wget", "-q", "-O", "-", "http://web/"); code != 0 || out != "hello from web\n" {
			t.Errorf("client fetching http://web/ %s: exit %d, %q, %s", when, code, out, stderr)
		}
	}
	get("after up")
	byName("after up")

	sups, before, nets := supervisors(state), qemus(state), networkProcs(state)
	if len(sups) != 1 || len(before) != 2 || len(nets) != 1 {
		t.Fatalf("supervisors %v, qemus %v, network processes %v: want 1, 2, 1", sups, before, nets)
	}
	syscall.Kill(sups[0], syscall.SIGKILL)
	if left := waitGone(supervisors, state); len(left) != 0 {
		t.Fatalf("supervisor %v survived SIGKILL", left)
	}
	get("with no supervisor")

	start = time.Now()
	if _, stderr, code := p.in(dir, "", "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up after the supervisor was killed: exit %d\n%s", code, stderr)
	}
	t.Logf("up -d --wait adopting 2 VMs: %s", time.Since(start))
	if after := qemus(state); fmt.Sprint(after) != fmt.Sprint(before) {
		b, _ := os.ReadFile(filepath.Join(state, "supervisor.log"))
		t.Errorf("qemu processes before %v, after %v: want the same\nsupervisor log:\n%s", before, after, b)
	}
	if after := networkProcs(state); fmt.Sprint(after) != fmt.Sprint(nets) {
		t.Errorf("network processes before %v, after %v: want the same", nets, after)
	}
	get("after adoption")
	byName("after adoption")

	start = time.Now()
	if _, stderr, code := p.in(dir, "", "down", "-t", "0"); code != 0 {
		t.Fatalf("down: exit %d\n%s", code, stderr)
	}
	if left := waitGone(networkProcs, state); len(left) != 0 {
		t.Errorf("network process %v left after down", left)
	}
	t.Logf("down until the network process exited: %s", time.Since(start))
	socks, _ := filepath.Glob(filepath.Join(state, "net", "*.sock"))
	if fileExistsT(filepath.Join(state, "network.sock")) || len(socks) != 0 {
		t.Errorf("after down: network.sock left: %v; NIC sockets %v", fileExistsT(filepath.Join(state, "network.sock")), socks)
	}
	if b, _ := os.ReadFile(filepath.Join(state, "network.log")); !bytes.Contains(b, []byte("network process exits")) {
		t.Errorf("network.log:\n%s", b)
	}
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// TestUpForeground: foreground up prints prefixed logs, --exit-code-from
// stops everything when that service exits and returns its code, and
// Ctrl-C stops the services.
func TestUpForeground(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	dir := filepath.Join(p.home, "fg")
	p.cleanup(dir)
	compose := `services:
  job:
    image: ` + ref + `
    command: ["sh", "-c", "echo hello from job; sleep 1; exit 3"]
  idle:
    image: ` + ref + `
    command: ["sh", "-c", "echo idle; exec sleep 1000"]
    stop_grace_period: 1s
`
	stdout, stderr, code := p.in(dir, compose, "up", "--exit-code-from", "job")
	if code != 3 || !strings.Contains(stdout, "job-1  | hello from job") || !strings.Contains(stdout, "idle-1 | idle") {
		t.Errorf("up --exit-code-from job: exit %d, stdout %q, stderr %s", code, stdout, stderr)
	}
	if e := p.ps(dir)["idle"]; e.State != "exited" {
		t.Errorf("idle after the job exited: %+v", e)
	}

	c := p.cmdIn(dir, "", "quiet", "up", "idle")
	var out bytes.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "idle-1 | idle") && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	c.Process.Signal(os.Interrupt)
	err := c.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 130 {
		t.Errorf("foreground up after Ctrl-C: %v; output: %s", err, out.String())
	}
	if e := p.ps(dir)["idle"]; e.State != "exited" {
		t.Errorf("idle after Ctrl-C: %+v", e)
	}
}

// TestUpStdinOpenAndTty: compose's stdin_open keeps a service's stdin open
// (cat waits on it instead of ending at once), and tty gives it a
// terminal.
func TestUpStdinOpenAndTty(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	dir := filepath.Join(p.home, "stdin")
	p.cleanup(dir)
	compose := `services:
  open:
    image: ` + ref + `
    command: [cat]
    stdin_open: true
    network_mode: none
  closed:
    image: ` + ref + `
    command: [cat]
    network_mode: none
  tty:
    image: ` + ref + `
    command: ["sh", "-c", "test -t 0 && test -t 1 && echo a terminal; exec sleep 1000"]
    tty: true
    network_mode: none
`
	if _, stderr, code := p.in(dir, compose, "up", "-d"); code != 0 {
		t.Fatalf("up -d: exit %d\n%s", code, stderr)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		ps := p.ps(dir)
		if ps["closed"].State == "exited" || time.Now().After(deadline) {
			if ps["open"].State != "running" || ps["closed"].State != "exited" || ps["tty"].State != "running" {
				t.Errorf("ps: %+v; want open and tty running, closed exited", ps)
			}
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out, stderr, _ := p.in(dir, "", "logs", "--no-log-prefix", "tty"); out != "a terminal\n" {
		t.Errorf("logs of the tty service: %q; want %q\n%s", out, "a terminal\n", stderr)
	}
}
