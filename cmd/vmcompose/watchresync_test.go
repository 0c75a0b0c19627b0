//go:build linux

package main_test

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestWatchResync: while watch runs, a VM that boots gets the synced
// paths before its process starts, whatever booted it: the watch's own
// up, the restart policy (the service itself spoils the file before it
// fails: the next start reads the host's again), and a start after the
// user stopped it (an edit made meanwhile is there at start). Each
// resync is a line of watch's output.
func TestWatchResync(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("static", staticImage(t))
	dir := filepath.Join(p.home, "resync")
	p.cleanup(dir)
	write := writer(t, dir)
	write("compose.yaml", `services:
  app:
    image: `+ref+`
    command: ["/bin/busybox", "sh", "-c", "echo start $$(/bin/busybox cat /app/a.txt); echo spoiled > /app/a.txt; /bin/busybox sleep 2; exit 3"]
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
	await := func(prefix string) {
		t.Helper()
		timeout := time.After(time.Minute)
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("watch ended before %q\n%s", prefix, werr)
				}
				if strings.HasPrefix(l, prefix) {
					return
				}
			case <-timeout:
				t.Fatalf("watch did not print %q in a minute\n%s", prefix, werr)
			}
		}
	}
	await("app-1: restarted: 2 files synced before its process started")
	until(t, "the restarted process", func() bool { return strings.Count(p.logsOf(dir, "app"), "start v1") >= 2 })
	write("src/a.txt", "v2\n")
	await("app-1: restarted: 2 files synced")
	until(t, "the edit at a start", func() bool { return strings.Contains(p.logsOf(dir, "app"), "start v2") })

	if _, stderr, code := p.in(dir, "", "stop", "app"); code != 0 {
		t.Fatalf("stop: %s", stderr)
	}
	write("src/a.txt", "v3\n")
	if _, stderr, code := p.in(dir, "", "start", "app"); code != 0 {
		t.Fatalf("start: %s", stderr)
	}
	await("app-1: started: 2 files synced")
	until(t, "the edit made while stopped", func() bool { return strings.Contains(p.logsOf(dir, "app"), "start v3") })
	if logs := p.logsOf(dir, "app"); strings.Contains(logs, "start spoiled") {
		t.Errorf("a process started with the file its guest spoiled:\n%s", logs)
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

// writer writes files under dir (parents made), failing t on an error.
func writer(t testing.TB, dir string) func(rel, data string) {
	return func(rel, data string) {
		t.Helper()
		f := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// linesOf sends r's lines, closing the channel at its end.
func linesOf(r io.Reader) <-chan string {
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	return lines
}

// within polls cond until it holds or d passed, and says which.
func within(d time.Duration, cond func() bool) bool {
	for deadline := time.Now().Add(d); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

// syncBuffer is a bytes.Buffer that one goroutine writes while another
// reads.
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
