//go:build linux

package main_test

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWatchResync: while watch runs, a VM that boots gets the synced
// paths before its process starts, whatever booted it: the watch's own
// up, the restart policy after its QEMU was killed (the service spoils
// the file as it starts: the next start reads the host's again), the
// restart policy after the service failed (an edit made meanwhile is
// there), and a start after the user stopped it (an edit made while
// stopped is there at start). Each resync is a line of watch's output.
func TestWatchResync(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("static", staticImage(t))
	dir := filepath.Join(p.home, "resync")
	p.cleanup(dir)
	write := writer(t, dir)
	write("compose.yaml", `services:
  app:
    image: `+ref+`
    command: ["/bin/busybox", "sh", "-c", "echo start $$(/bin/busybox cat /app/a.txt); echo spoiled > /app/a.txt; echo $$$$ > /tmp/pid; exec /bin/busybox sleep 1000000"]
    restart: on-failure
    stop_grace_period: 1s
    develop:
      watch:
        - {path: ./src, action: sync, target: /app}
`)
	write("src/a.txt", "v1\n")
	c, out, werr := p.background(dir, "app-1: created: 2 files synced before its process started", "watch")
	defer func() {
		if c.ProcessState == nil {
			c.Process.Kill()
			c.Wait()
		}
	}()
	lines := linesOf(out)
	var seen []string
	await := func(prefix string) {
		t.Helper()
		timeout := time.After(time.Minute)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("watch ended before %q\n%s", prefix, werr)
				}
				seen = append(seen, l)
				if strings.HasPrefix(l, prefix) {
					return
				}
			case <-timeout:
				t.Fatalf("watch did not print %q in a minute; it printed:\n%s\nstderr:\n%s\nlog:\n%s", prefix, strings.Join(seen, "\n"), werr, p.logsOf(dir, "app"))
			}
		}
	}
	starts := func(v string) int { return strings.Count(p.logsOf(dir, "app"), "start "+v) }
	until(t, "the first start", func() bool { return starts("v1") == 1 })
	pid := p.ps(dir)["app"].Pid
	if pid == 0 {
		t.Fatal("no qemu pid for app")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	await("app-1: restarted: 2 files synced before its process started")
	until(t, "the start after the kill", func() bool { return starts("v1") == 2 })

	// The guest has the spoiled file until an edit: the edit, then the
	// service fails (killed from inside), and the start after it has the
	// edit.
	write("src/a.txt", "v2\n")
	await("app: sync 1 file to /app")
	if _, stderr, code := p.in(dir, "", "exec", "-T", "app", "/bin/busybox", "sh", "-c", "kill $(/bin/busybox cat /tmp/pid)"); code != 0 && code != 137 {
		// 137: the guest killed the exec with the service, as a
		// container's processes go with its main one.
		t.Fatalf("exec kill: exit %d: %s", code, stderr)
	}
	await("app-1: restarted: 2 files synced")
	until(t, "the edit at a start", func() bool { return starts("v2") >= 1 })

	if _, stderr, code := p.in(dir, "", "stop", "app"); code != 0 {
		t.Fatalf("stop: %s", stderr)
	}
	write("src/a.txt", "v3\n")
	if _, stderr, code := p.in(dir, "", "start", "app"); code != 0 {
		t.Fatalf("start: %s", stderr)
	}
	await("app-1: started: 2 files synced")
	until(t, "the edit made while stopped", func() bool { return starts("v3") == 1 })
	if n := starts("spoiled"); n > 0 {
		t.Errorf("%d processes started with the file their guest spoiled:\n%s", n, p.logsOf(dir, "app"))
	}
	c.Process.Signal(os.Interrupt)
	c.Wait()
}

// TestWatchRestartDependants: a sync+restart of one service restarts, in
// place, the process of the service that depends on it with restart:
// true, and not that of one that depends on it without.
func TestWatchRestartDependants(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("static", staticImage(t))
	dir := filepath.Join(p.home, "dependants")
	p.cleanup(dir)
	if err := os.MkdirAll(filepath.Join(dir, "conf"), 0o755); err != nil {
		t.Fatal(err)
	}
	compose := `x-app: &app
  image: ` + ref + `
  command: ["/bin/busybox", "sh", "-c", "echo started; exec /bin/busybox sleep 1000000"]
  stop_grace_period: 1s
services:
  db:
    <<: *app
    develop:
      watch:
        - {path: ./conf, action: sync+restart, target: /conf}
  web:
    <<: *app
    depends_on: {db: {condition: service_started, restart: true}}
  cron:
    <<: *app
    depends_on: {db: {condition: service_started}}
`
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(compose), 0o644); err != nil {
		t.Fatal(err)
	}
	c, out, werr := p.background(dir, "db-1: created: 1 file synced", "watch")
	defer func() {
		if c.ProcessState == nil {
			c.Process.Kill()
			c.Wait()
		}
	}()
	wout := new(syncBuffer)
	go io.Copy(wout, out)
	// Each process printed its line: a restart before would kill it first.
	for _, svc := range []string{"db", "web", "cron"} {
		until(t, svc+"'s start", func() bool { return strings.Contains(p.logsOf(dir, svc), "started") })
	}
	if err := os.WriteFile(filepath.Join(dir, "conf", "c.txt"), []byte("two\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	until(t, "db's restart", func() bool { return strings.Count(p.logsOf(dir, "db"), "started") == 2 })
	if !within(time.Minute, func() bool { return strings.Count(p.logsOf(dir, "web"), "started") == 2 }) {
		t.Fatalf("web was not restarted\nwatch's output:\n%s\nstderr:\n%s\nweb's log:\n%s", wout, werr, p.logsOf(dir, "web"))
	}
	time.Sleep(time.Second)
	if n := strings.Count(p.logsOf(dir, "cron"), "started"); n != 1 {
		t.Errorf("cron (no restart: true) started %d times", n)
	}
	for svc, e := range p.ps(dir) {
		if e.State != "running" {
			t.Errorf("%s: %+v", svc, e)
		}
	}
	c.Process.Signal(os.Interrupt)
	c.Wait()
	if werr.Len() > 0 {
		t.Errorf("watch's stderr: %s", werr)
	}
}
