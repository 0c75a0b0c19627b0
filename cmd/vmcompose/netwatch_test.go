package main_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

// TestNetworkProcessKilled: the network process killed with SIGKILL under
// a running project is replaced by the supervisor, which boots again the
// VMs whose restart policy says so: the published port answers again and
// service names resolve again. A service with restart: no stays exited
// until the next up. ps says what happened; one network process runs,
// and a down leaves none. A supervisor killed with the network process
// is replaced by one that does the same when it adopts the VMs.
func TestNetworkProcessKilled(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	dir := filepath.Join(p.home, "netkill")
	state := filepath.Join(p.home, "state", "vmcompose", "netkill")
	p.cleanup(dir)
	port := freePort(t)
	compose := `services:
  web:
    image: ` + ref + `
    command: ["sh", "-c", "mkdir -p /www && echo hello from web > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports: ["127.0.0.1:` + port + `:80"]
    restart: always
  client:
    image: ` + ref + `
    command: [sleep, "1000"]
    restart: unless-stopped
  once:
    image: ` + ref + `
    command: [sleep, "1000"]
`
	if _, stderr, code := p.in(dir, compose, "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up -d --wait: exit %d\n%s", code, stderr)
	}
	get := func() (string, error) {
		c := http.Client{Timeout: 5 * time.Second}
		resp, err := c.Get("http://127.0.0.1:" + port + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	// waitGet waits for the published port to answer (httpd starts a
	// moment after its VM runs) and says how long that took.
	waitGet := func(when string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		var body string
		var err error
		for deadline := start.Add(within); ; time.Sleep(100 * time.Millisecond) {
			if body, err = get(); body == "hello from web\n" {
				return time.Since(start)
			}
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(filepath.Join(state, "supervisor.log"))
				t.Fatalf("the published port did not answer %s within %s: %q, %v\nsupervisor log:\n%s", when, within, body, err, b)
			}
		}
	}
	// waitByName waits for the client to reach web by its service name.
	waitByName := func(when string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		for deadline := start.Add(within); ; time.Sleep(200 * time.Millisecond) {
			out, stderr, code := p.in(dir, "", "exec", "-T", "client", "timeout", "10", "wget", "-q", "-O", "-", "http://web/")
			if code == 0 && out == "hello from web\n" {
				return time.Since(start)
			}
			if time.Now().After(deadline) {
				t.Fatalf("client fetching http://web/ %s: exit %d, %q, %s", when, code, out, stderr)
			}
		}
	}
	waitGet("after up", time.Minute)
	waitByName("after up", time.Minute)
	before := p.ps(dir)
	nets, sups := networkProcs(state), supervisors(state)
	if len(nets) != 1 || len(sups) != 1 {
		t.Fatalf("network processes %v, supervisors %v: want one each", nets, sups)
	}

	killed := time.Now()
	syscall.Kill(nets[0], syscall.SIGKILL)
	waitGet("after the network process was killed", 3*time.Minute)
	t.Logf("network process killed: the published port answered again after %s", time.Since(killed).Round(10*time.Millisecond))
	waitByName("after the network process was killed", 2*time.Minute)
	t.Logf("network process killed: the client reached web by name after %s", time.Since(killed).Round(10*time.Millisecond))

	after := p.ps(dir)
	for _, svc := range []string{"web", "client"} {
		e := after[svc]
		if e.State != "running" || e.Pid == before[svc].Pid || !strings.Contains(e.Status, "restarted: its network process died") {
			t.Errorf("%s after the network process was killed: %+v (before: pid %d)", svc, e, before[svc].Pid)
		}
	}
	if e := after["once"]; e.State != "exited" || !strings.Contains(e.Status, "ended: its network process died; restart: no") {
		t.Errorf("once (restart: no) after the network process was killed: %+v", e)
	}
	if now := networkProcs(state); len(now) != 1 || now[0] == nets[0] {
		t.Errorf("network processes after the kill: %v, want one other than %d", now, nets[0])
	}
	if now := supervisors(state); fmt.Sprint(now) != fmt.Sprint(sups) {
		t.Errorf("supervisors before %v, after %v: want the same", sups, now)
	}
	if n := len(qemus(state)); n != 2 {
		t.Errorf("qemu processes: %d, want 2 (web and client)", n)
	}
	log, _ := os.ReadFile(filepath.Join(state, "supervisor.log"))
	for _, want := range []string{"network process died", "project=netkill", fmt.Sprintf("pid=%d", nets[0]), `status="signal: killed"`} {
		if !strings.Contains(string(log), want) {
			t.Errorf("supervisor log lacks %q:\n%s", want, log)
		}
	}

	// The supervisor and the network process killed together: the next
	// supervisor finds the VMs' network gone and treats them the same
	// way, and up boots what stayed exited.
	before = p.ps(dir)
	for _, pid := range append(supervisors(state), networkProcs(state)...) {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if left := waitGone(supervisors, state); len(left) != 0 {
		t.Fatalf("supervisor %v survived SIGKILL", left)
	}
	start := time.Now()
	if _, stderr, code := p.in(dir, "", "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up after the supervisor and the network process were killed: exit %d\n%s", code, stderr)
	}
	t.Logf("up -d --wait after the supervisor and the network process were killed: %s", time.Since(start).Round(10*time.Millisecond))
	waitGet("after the supervisor and the network process were killed", 2*time.Minute)
	waitByName("after the supervisor and the network process were killed", 2*time.Minute)
	after = p.ps(dir)
	for _, svc := range []string{"web", "client", "once"} {
		if e := after[svc]; e.State != "running" || e.Pid == before[svc].Pid {
			t.Errorf("%s after up: %+v (before: %+v)", svc, e, before[svc])
		}
	}
	if e := after["once"]; strings.Contains(e.Status, "network") {
		t.Errorf("once after up still shows the loss: %+v", e)
	}
	if n := len(networkProcs(state)); n != 1 {
		t.Errorf("network processes after up: %d, want 1", n)
	}
	if n := len(qemus(state)); n != 3 {
		t.Errorf("qemu processes after up: %d, want 3", n)
	}
	// (ps may not show web's loss: up may find it between the end the new
	// supervisor gave it and its boot, and start it as a stopped VM.)
	if log, _ := os.ReadFile(filepath.Join(state, "supervisor.log")); !strings.Contains(string(log), "VM lost its network while no supervisor ran") {
		t.Errorf("supervisor log lacks the loss found at adoption:\n%s", log)
	}

	if _, stderr, code := p.in(dir, "", "down", "-t", "0"); code != 0 {
		t.Fatalf("down: exit %d\n%s", code, stderr)
	}
	if left := waitGone(networkProcs, state); len(left) != 0 {
		t.Errorf("network processes left after down: %v", left)
	}
}
