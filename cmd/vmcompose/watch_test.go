package main_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
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
	write := writer(t, dir)
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
	write("src/.dockerignore", "*.env\n")
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
	var linkAndMode string // the last stat of the symlink and the mode
	until := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not in the guest after 30s (stat: %q)\nwatch's stderr:\n%s", what, linkAndMode, werr)
			}
		}
	}

	write("ro/x", "2\n") // /proc cannot hold it: said on stderr, and watching goes on
	write("src/x.tmp", "ignored\n")
	write("src/pre.txt", "edited\n")
	write("src/new/deep/n.txt", "nested\n")
	write("src/secret.env", "dockerignored\n")
	write("src/run.sh", "#!/bin/sh\n")
	if err := os.Chmod(filepath.Join(dir, "src/run.sh"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("new/deep/n.txt", filepath.Join(dir, "src/link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "src/del.txt")); err != nil {
		t.Fatal(err)
	}
	until("the edit, the new directory, the delete", func() bool {
		out, _ := bb("cat", "/app/pre.txt", "/app/new/deep/n.txt")
		_, gone := bb("stat", "/app/del.txt")
		return out == "edited\nnested\n" && gone != 0
	})
	until("the symlink and the mode", func() bool {
		linkAndMode, _ = bb("stat", "-c", "%A %N", "/app/run.sh", "/app/link")
		return linkAndMode == "-rwxr-x--- /app/run.sh\nlrwxrwxrwx '/app/link' -> 'new/deep/n.txt'\n"
	})
	for _, f := range []string{"/app/x.tmp", "/app/secret.env"} {
		if _, code := bb("stat", f); code == 0 {
			t.Errorf("an ignored file reached the guest: %s", f)
		}
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
	// --prune (the default): the replaced image's root filesystem is
	// gone, the new one's is there.
	until("the replaced image pruned", func() bool {
		fs, _ := filepath.Glob(filepath.Join(p.home, "rootfs", "*.ext4"))
		return len(fs) == 1
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
	c := p.cmdIn(dir, "", "quiet", "--progress", "json", "up", "--watch")
	werr := new(bytes.Buffer)
	c.Stderr = werr
	out, err := c.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if c.ProcessState == nil {
			c.Process.Kill()
			c.Wait()
		}
	}()
	lines := linesOf(out)
	// The lines wanted, each in any order among the others.
	await := func(want map[string]bool, start time.Time) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for len(want) > 0 {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("up --watch ended; still wanted %v\n%s", want, werr)
				}
				for w := range want {
					if strings.Contains(l, w) {
						t.Logf("%s (%v)", l, time.Since(start))
						delete(want, w)
					}
				}
			case <-timeout:
				t.Fatalf("up --watch did not print %v in 30s\n%s", want, werr)
			}
		}
	}
	// The VM it created was resynced before its process started, and
	// the service's log is attached.
	await(map[string]bool{`{"service":"app","action":"resync","booted":"created","replica":1,`: true,
		`{"watching":["app"]}`: true, "hello from app one": true}, time.Now())
	if err := os.WriteFile(filepath.Join(dir, "src", "a.txt"), []byte("synced\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	await(map[string]bool{`{"service":"app","action":"sync","entries":1,"target":"/app","replicas":1,"ms":`: true}, time.Now())
	if got, _, _ := p.in(dir, "", "exec", "-T", "app", "/bin/busybox", "cat", "/app/a.txt"); got != "synced\n" {
		t.Errorf("the guest has %q", got)
	}
	// An edit of compose.yaml recreates the service: its event, and the
	// new VM's log among the others.
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(strings.Replace(compose, "{G: one}", "{G: two}", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	await(map[string]bool{`{"config":["compose.yaml"],"service":"app","action":"recreate","changed":["environment"]}`: true,
		`{"service":"app","action":"resync","booted":"created"`: true, "hello from app two": true}, time.Now())
	c.Process.Signal(os.Interrupt)
	for range lines {
	}
	err = c.Wait()
	if code := c.ProcessState.ExitCode(); code != 130 {
		t.Errorf("up --watch after Ctrl-C: %v (exit %d), want 130\n%s", err, code, werr)
	}
	if e := p.ps(dir)["app"]; e.State == "running" {
		t.Errorf("after Ctrl-C: %+v", e)
	}
}
