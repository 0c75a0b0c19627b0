package main_test

import (
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestWatchConfig: while watch runs, an edit of one service's environment
// in compose.yaml (saved by renaming over it, as editors do) recreates
// that service only, with the new value, and says which field changed;
// the other keeps its boot; an edit of its env_file recreates it too. A
// file that no longer parses, and a rule watch would refuse, are said in
// one line and change nothing; the next
// good edit moves a rule's target, and a file written afterwards lands at
// the new one, while a service new in the file is said and not started.
// A service the user stopped is said and left stopped. An edit made while
// watch's up runs is applied once it watches.
func TestWatchConfig(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("static", staticImage(t))
	dir := filepath.Join(p.home, "watchconfig")
	p.cleanup(dir)
	for _, d := range []string{"src", "osrc"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	compose := func(greeting, appRule, otherX, extra string) string {
		return `services:
  app:
    image: ` + ref + `
    command: ["/bin/busybox", "sh", "-c", "echo $$GREETING $$FROM_FILE > /tmp/greeting; exec /bin/busybox sleep 1000000"]
    stop_grace_period: 1s
    environment: {GREETING: ` + greeting + `}
    env_file: [app.env]
    develop:
      watch:
        - ` + appRule + `
  other:
    image: ` + ref + `
    command: ["/bin/busybox", "sleep", "1000000"]
    stop_grace_period: 1s
    environment: {X: "` + otherX + `"}
    develop:
      watch:
        - {path: ./osrc, action: sync, target: /o}
` + extra
	}
	save := func(data string) { // an editor's save: a new file renamed over the old one
		t.Helper()
		tmp := filepath.Join(dir, ".compose.yaml.swp")
		if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "compose.yaml")); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "app.env"), []byte("FROM_FILE=a\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	save(compose("zero", "{path: ./src, action: sync, target: /app}", "1", ""))
	c := p.cmdIn(dir, "", "quiet", "watch")
	stdout, stderr := follow(t, c.StdoutPipe), follow(t, c.StderrPipe)
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if c.ProcessState == nil {
			c.Process.Kill()
			c.Wait()
		}
	}()
	until := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); !ok(); time.Sleep(200 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 60s\nwatch's stdout:\n%s\nwatch's stderr:\n%s", what, stdout, stderr)
			}
		}
	}
	printed := func(f *syncBuffer, s string) func() bool {
		return func() bool { return strings.Contains(f.String(), s) }
	}
	// An edit while up runs, once the supervisor read the file (it
	// recorded the VMs), and before watch watches it, is applied too.
	until("the supervisor's record", func() bool {
		_, err := os.Stat(filepath.Join(p.home, "state", "vmcompose", "watchconfig", "state.json"))
		return err == nil
	})
	save(compose("one", "{path: ./src, action: sync, target: /app}", "1", ""))
	until("watch's start", printed(stdout, "Watching 2 services: app, other\n"))
	cat := func(service, file string) string {
		t.Helper()
		got, _, _ := p.in(dir, "", "exec", "-T", service, "/bin/busybox", "cat", file)
		return got
	}
	until("the edit made during up", func() bool { return cat("app", "/tmp/greeting") == "one a\n" })
	const bootID = "/proc/sys/kernel/random/boot_id"
	appBoot, otherBoot := cat("app", bootID), cat("other", bootID)
	if appBoot == "" || otherBoot == "" || cat("app", "/tmp/greeting") != "one a\n" {
		t.Fatalf("before the edit: boots %q %q, greeting %q", appBoot, otherBoot, cat("app", "/tmp/greeting"))
	}

	recreating := "app: compose.yaml changed: recreating (environment)\n"
	before := strings.Count(stdout.String(), recreating)
	save(compose("two", "{path: ./src, action: sync, target: /app}", "1", ""))
	until("the recreate's line", func() bool { return strings.Count(stdout.String(), recreating) > before })
	until("the new environment", func() bool { return cat("app", "/tmp/greeting") == "two a\n" })
	if got := cat("app", bootID); got == appBoot || got == "" {
		t.Errorf("app was not recreated: boot %q before and %q after", appBoot, got)
	}
	if got := cat("other", bootID); got != otherBoot {
		t.Errorf("other was touched: boot %q before and %q after", otherBoot, got)
	}
	// An env_file is followed too.
	if err := os.WriteFile(filepath.Join(dir, "app.env"), []byte("FROM_FILE=b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	until("the env_file's recreate", printed(stdout, "app: app.env changed: recreating (environment)\n"))
	until("the env_file's value", func() bool { return cat("app", "/tmp/greeting") == "two b\n" })

	// A broken file, then a rule watch refuses: both said, nothing stops.
	save("services:\n  app: [\n")
	until("the YAML error", func() bool {
		return regexp.MustCompile(`(?m)^vmcompose: compose.yaml: .*: the services keep running as they were$`).MatchString(stderr.String())
	})
	save(compose("two", "{path: ./nope, action: sync, target: /app}", "1", ""))
	until("the refused rule", printed(stderr, `compose.yaml: service "app" cannot be watched: develop.watch[0]`))
	for _, s := range []string{"app", "other"} {
		if e := p.ps(dir)[s]; e.State != "running" {
			t.Errorf("after the broken edits, %s: %+v", s, e)
		}
	}

	// The rule's new target is followed; the new service is only said.
	extra := "  extra:\n    image: " + ref + "\n"
	save(compose("two", "{path: ./src, action: sync, target: /moved}", "1", extra))
	until("the new service's line", printed(stdout, "extra: compose.yaml changed: new service, not started: run vmcompose up\n"))
	until("watching by the new rules", func() bool { return strings.Count(stdout.String(), "Watching 2 services: app, other\n") == 2 })
	if err := os.WriteFile(filepath.Join(dir, "src", "late.txt"), []byte("late\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	until("the file at the new target", func() bool { return cat("app", "/moved/late.txt") == "late\n" })
	if got := cat("app", "/app/late.txt"); got != "" {
		t.Errorf("the old target got the file too: %q", got)
	}
	if e, ok := p.ps(dir)["extra"]; ok {
		t.Errorf("the new service was started: %+v", e)
	}
	if got := cat("other", bootID); got != otherBoot {
		t.Errorf("other was touched by the later edits: boot %q before and %q after", otherBoot, got)
	}

	// A service the user stopped stays stopped, its change said.
	if _, stderr, code := p.in(dir, "", "stop", "other"); code != 0 {
		t.Fatalf("stop: exit %d\n%s", code, stderr)
	}
	save(compose("two", "{path: ./src, action: sync, target: /moved}", "2", extra))
	until("the stopped service's line", printed(stdout, "other: compose.yaml changed: not recreated, it is stopped (environment)\n"))
	if e := p.ps(dir)["other"]; e.State == "running" {
		t.Errorf("the stopped service was started: %+v", e)
	}
	c.Process.Signal(os.Interrupt)
	if err := c.Wait(); err != nil {
		t.Errorf("watch after SIGINT: %v\n%s", err, stderr)
	}
	t.Logf("watch's stdout:\n%s\nwatch's stderr:\n%s", stdout, stderr)
}

// follow gathers what the pipe that open gives carries, as it comes.
func follow(t *testing.T, open func() (io.ReadCloser, error)) *syncBuffer {
	r, err := open()
	if err != nil {
		t.Fatal(err)
	}
	f := new(syncBuffer)
	go io.Copy(f, r)
	return f
}
