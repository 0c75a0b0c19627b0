package main_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

// TestWatch runs watch in the background on a service with a sync rule
// (initial_sync, an ignore), a sync+restart rule and a sync+exec rule: a
// file there before watch is in the guest when it reports ready; an edit,
// a new nested directory and a delete reach the guest, an ignored file
// does not; the sync+restart rule's file arrives with a new process in the
// same boot; the sync+exec rule's command runs after its file arrives,
// with its user, directory and environment; 1 000 writes are one sync
// request; a target the guest cannot write is an error printed, and
// watching goes on; a stopped service is not started; a rebuild pulls the image pushed again and recreates the
// service with it; SIGINT ends watch with 0 and leaves the service running. A rule
// whose path is missing is refused in one line before anything starts.
func TestWatch(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("static", staticImage(t))
	bad := filepath.Join(p.home, "watchbad")
	_, stderr, code := p.in(bad, "services:\n  app:\n    image: "+ref+"\n    develop:\n      watch:\n        - {path: ./nope, action: sync, target: /app}\n", "watch")
	if code == 0 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, `service "app"`) || !strings.Contains(stderr, "develop.watch[0]") {
		t.Errorf("watch with a missing path: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(p.home, "state", "vmcompose", "watchbad")); err == nil {
		t.Errorf("a refused watch left a state directory: something started")
	}

	dir := filepath.Join(p.home, "watch")
	p.cleanup(dir)
	state := filepath.Join(p.home, "state", "vmcompose", "watch")
	write := func(rel, data string) {
		t.Helper()
		f := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("compose.yaml", `services:
  app:
    image: `+ref+`
    command: ["/bin/busybox", "sh", "-c", "echo started $$$$ $$(/bin/busybox cat /proc/sys/kernel/random/boot_id); exec /bin/busybox sleep 1000000"]
    stop_grace_period: 1s
    develop:
      watch:
        - {path: ./src, action: sync, target: /app, initial_sync: true, ignore: ["*.tmp"]}
        - {path: ./conf, action: sync+restart, target: /conf}
        - path: ./hook
          action: sync+exec
          target: /hook
          exec: {command: ["/bin/busybox", "sh", "-c", "echo $$GREETING $$(/bin/busybox id -u) $$PWD > /tmp/hook.out"], user: "7:7", working_dir: /hook, environment: {GREETING: hi}}
        - {path: ./pushed, action: rebuild}
        - {path: ./ro, action: sync, target: /proc/vmcompose}
`)
	write("src/pre.txt", "pre\n")
	write("src/del.txt", "del\n")
	write("conf/c.txt", "one\n")
	write("hook/h.txt", "one\n")
	write("pushed", "1\n")
	write("ro/x", "1\n")
	c, _, werr := p.background(dir, "Watching 1 service: app", "watch", "--quiet")
	defer func() {
		if c.ProcessState == nil {
			c.Process.Kill()
			c.Wait()
		}
	}()
	bb := func(args ...string) (string, int) {
		t.Helper()
		out, _, code := p.in(dir, "", append([]string{"exec", "-T", "-u", "0", "app", "/bin/busybox"}, args...)...)
		return out, code
	}
	if out, _ := bb("cat", "/app/pre.txt", "/app/del.txt"); out != "pre\ndel\n" {
		t.Errorf("initial_sync: the guest has %q when watch is ready", out)
	}
	until := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not in the guest after 30s\nwatch's stderr:\n%s", what, werr)
			}
		}
	}

	write("ro/x", "2\n") // /proc cannot hold it: said on stderr, and watching goes on
	write("src/x.tmp", "ignored\n")
	write("src/pre.txt", "edited\n")
	write("src/new/deep/n.txt", "nested\n")
	if err := os.Remove(filepath.Join(dir, "src/del.txt")); err != nil {
		t.Fatal(err)
	}
	until("the edit, the new directory, the delete", func() bool {
		out, _ := bb("cat", "/app/pre.txt", "/app/new/deep/n.txt")
		_, gone := bb("stat", "/app/del.txt")
		return out == "edited\nnested\n" && gone != 0
	})
	if _, code := bb("stat", "/app/x.tmp"); code == 0 {
		t.Errorf("an ignored file reached the guest")
	}

	started := regexp.MustCompile(`started (\d+) (\S+)`)
	if n := len(started.FindAllString(p.logsOf(dir, "app"), -1)); n != 1 {
		t.Fatalf("before sync+restart: %d starts in the log", n)
	}
	write("conf/c.txt", "two\n")
	var starts [][]string
	until("sync+restart's restart", func() bool {
		starts = started.FindAllStringSubmatch(p.logsOf(dir, "app"), -1)
		return len(starts) == 2
	})
	if starts[0][1] == starts[1][1] || starts[0][2] != starts[1][2] {
		t.Errorf("sync+restart: want a new pid in the same boot: %q", starts)
	}
	if out, _ := bb("cat", "/conf/c.txt"); out != "two\n" {
		t.Errorf("sync+restart: the guest has %q", out)
	}

	write("hook/h.txt", "two\n")
	until("sync+exec's command", func() bool {
		out, _ := bb("cat", "/hook/h.txt", "/tmp/hook.out")
		return out == "two\nhi 7 /hook\n"
	})

	before := syncCount(t, state, "app-1")
	start := time.Now()
	for i := range 1000 {
		write(fmt.Sprintf("src/many/%02d/f%d", i%10, i), "y")
	}
	until("1 000 files", func() bool {
		out, _ := bb("find", "/app/many", "-type", "f")
		return strings.Count(out, "\n") == 1000
	})
	t.Logf("1 000 files written and in the guest in %v", time.Since(start))
	if n := syncCount(t, state, "app-1") - before; n != 1 {
		t.Errorf("1 000 writes took %d sync requests, want 1", n)
	}

	// rebuild: the image pushed again is pulled and the service recreated
	// with it.
	p.push("static", staticImageWith(t, testimage.File("etc/version", 0o644, "2\n")))
	write("pushed", "2\n")
	until("rebuild's new image", func() bool {
		out, _ := bb("cat", "/etc/version")
		return out == "2\n"
	})
	var after [][]string
	until("the recreated service's start", func() bool {
		after = started.FindAllStringSubmatch(p.logsOf(dir, "app"), -1)
		return len(after) > 0 && after[len(after)-1][2] != starts[0][2]
	})

	// A service the user stopped is skipped, not started.
	if _, stderr, code := p.in(dir, "", "stop", "app"); code != 0 {
		t.Fatalf("stop: exit %d\n%s", code, stderr)
	}
	write("src/late.txt", "late\n")
	time.Sleep(time.Second)
	if e := p.ps(dir)["app"]; e.State == "running" {
		t.Errorf("watch started a stopped service: %+v", e)
	}
	if _, stderr, code := p.in(dir, "", "start", "app"); code != 0 {
		t.Fatalf("start: exit %d\n%s", code, stderr)
	}

	c.Process.Signal(os.Interrupt)
	if err := c.Wait(); err != nil {
		t.Errorf("watch after SIGINT: %v\n%s", err, werr)
	}
	if !strings.Contains(werr.String(), "app: sync 1 file to /proc/vmcompose") {
		t.Errorf("the sync into /proc did not say it failed:\n%s", werr)
	}
	t.Logf("watch's stderr:\n%s", werr)
	if e := p.ps(dir)["app"]; e.State != "running" {
		t.Errorf("after watch ended: %+v", e)
	}
}

// TestUpWatch: up --watch refuses a rule it cannot follow before anything
// starts, then attaches the logs and applies a change (its event among
// them, as JSON with --progress json) while the service runs; an edit of
// compose.yaml recreates the service, and the new VM's log follows; Ctrl-C
// stops the service as up does.
func TestUpWatch(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("static", staticImage(t))
	dir := filepath.Join(p.home, "upwatch")
	p.cleanup(dir)
	compose := `services:
  app:
    image: ` + ref + `
    command: ["/bin/busybox", "sh", "-c", "echo hello from app $$G; exec /bin/busybox sleep 1000000"]
    stop_grace_period: 1s
    environment: {G: one}
    develop:
      watch:
        - {path: ./src, action: sync, target: /app}
`
	if _, stderr, code := p.in(dir, compose, "up", "--watch"); code == 0 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "develop.watch[0] (path "+dir+"/src)") {
		t.Errorf("up --watch with a missing path: exit %d\n%s", code, stderr)
	}
	if e, ok := p.ps(dir)["app"]; ok {
		t.Errorf("a refused up --watch started the service: %+v", e)
	}
	if err := os.MkdirAll(filepath.Join(dir, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	c, out, werr := p.background(dir, `{"watching":["app"]}`, "--progress", "json", "up", "--watch")
	defer func() {
		if c.ProcessState == nil {
			c.Process.Kill()
			c.Wait()
		}
	}()
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	start := time.Now()
	// awaitLines waits for lines containing each of want, in any order.
	awaitLines := func(want ...string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for len(want) > 0 {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("up --watch ended; still wanted %q\n%s", want, werr)
				}
				want = slices.DeleteFunc(want, func(w string) bool {
					if strings.Contains(l, w) {
						t.Logf("%s (%v after the write)", l, time.Since(start))
						return true
					}
					return false
				})
			case <-timeout:
				t.Fatalf("up --watch did not print %q in 30s\n%s", want, werr)
			}
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "src", "a.txt"), []byte("synced\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The service's log and the batch's event, in either order.
	awaitLines("hello from app one", `{"service":"app","action":"sync","entries":1,"target":"/app","replicas":1,"ms":`)
	if got, _, _ := p.in(dir, "", "exec", "-T", "app", "/bin/busybox", "cat", "/app/a.txt"); got != "synced\n" {
		t.Errorf("the guest has %q", got)
	}
	// An edit of compose.yaml recreates the service: its event, and the
	// new VM's log among the others.
	start = time.Now()
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(strings.Replace(compose, "{G: one}", "{G: two}", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	awaitLines(`{"config":["compose.yaml"],"service":"app","action":"recreate","changed":["environment"]}`, "hello from app two")
	c.Process.Signal(os.Interrupt)
	for range lines {
	}
	err := c.Wait()
	if code := c.ProcessState.ExitCode(); code != 130 {
		t.Errorf("up --watch after Ctrl-C: %v (exit %d), want 130\n%s", err, code, werr)
	}
	if e := p.ps(dir)["app"]; e.State == "running" {
		t.Errorf("after Ctrl-C: %+v", e)
	}
}
