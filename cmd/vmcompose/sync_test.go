package main_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/internal/testimage"
	"github.com/vmcompose/vmcompose/reconcile"
	"github.com/vmcompose/vmcompose/supervisor"
)

// staticImage is scratch and one static binary, busybox: no shell, tar
// or cp in the PATH (the applets are not linked), with a target tree
// /app that holds what the sync deletes, and a symlink out of it.
func staticImage(t testing.TB) v1.Image { return staticImageWith(t) }

// staticImageWith is staticImage with extra entries.
func staticImageWith(t testing.TB, extra ...testimage.Entry) v1.Image {
	return testimage.Image(t, append([]testimage.Entry{
		testimage.Dir("bin/", 0o755),
		testimage.File("bin/busybox", 0o755, string(testimage.RequireBusybox(t))),
		testimage.Dir("etc/", 0o755),
		testimage.File("etc/keep", 0o644, "image\n"),
		testimage.Dir("app/", 0o755),
		testimage.File("app/gone", 0o644, "x"),
		testimage.Dir("app/old/", 0o755),
		testimage.Dir("app/old/deep/", 0o755),
		testimage.File("app/old/deep/f", 0o644, "x"),
		testimage.Symlink("app/out", "/etc"),
	}, extra...))
}

// bytesEntry is a file entry whose content is data.
func bytesEntry(path string, mode uint32, data string) agent.SyncEntry {
	return agent.SyncEntry{Op: agent.SyncFile, Path: path, Mode: mode, Size: int64(len(data)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(data)), nil }}
}

// syncCount is how many sync requests the guest of vm answered, by its
// console log.
func syncCount(t testing.TB, state, vm string) int {
	b, err := os.ReadFile(filepath.Join(state, "vms", vm, "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), `msg="sync applied"`)
}

// TestSync syncs into a running service whose image is one static binary:
// files, a nested new directory, deletes of a file and a directory tree, a
// symlink, modes, the owner (the service's user by default, or the one
// given); a .. and a symlink out of the target are refused and nothing
// outside changes; /run/secrets is refused; 1 000 files are one request.
func TestSync(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("static", staticImage(t))
	dir := filepath.Join(p.home, "sync")
	p.cleanup(dir)
	state := filepath.Join(p.home, "state", "vmcompose", "sync")
	compose := `services:
  app:
    image: ` + ref + `
    command: ["/bin/busybox", "sleep", "1000000"]
    user: "4321:8765"
    stop_grace_period: 1s
`
	if _, stderr, code := p.in(dir, compose, "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up: exit %d\n%s", code, stderr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sync := func(user string, entries []agent.SyncEntry) agent.SyncResult {
		t.Helper()
		req := &supervisor.Request{Services: []string{"app"}, Sync: &agent.SyncSpec{Target: "/app", User: user}}
		res, err := supervisor.Sync(ctx, state, req, entries)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	res := sync("", []agent.SyncEntry{
		bytesEntry("a.txt", 0o640, "hello\n"),
		bytesEntry("new/nested/b.sh", 0o755, "#!/bin/sh\n"),
		{Op: agent.SyncSymlink, Path: "link", Link: "a.txt"},
		{Op: agent.SyncDelete, Path: "gone"},
		{Op: agent.SyncDelete, Path: "old"},
		bytesEntry("../escape", 0o644, "no"),
		bytesEntry("out/pwned", 0o644, "no"),
		bytesEntry("out/keep", 0o644, "no"),
	})
	t.Logf("result: %+v", res)
	if res.Written != 3 || res.Deleted != 2 || res.Bytes != int64(len("hello\n#!/bin/sh\n")) || len(res.Skipped) != 3 {
		t.Errorf("result %+v", res)
	}
	for _, sk := range res.Skipped {
		if !strings.Contains(sk.Reason, "refused") {
			t.Errorf("skipped %s: %q, want refused", sk.Path, sk.Reason)
		}
	}
	res = sync("99:98", []agent.SyncEntry{bytesEntry("new/theirs", 0o600, "x")})
	if res.Written != 1 {
		t.Errorf("second batch: %+v", res)
	}

	// What the guest sees, with the one binary there is.
	bb := func(args ...string) string {
		t.Helper()
		out, stderr, code := p.in(dir, "", append([]string{"exec", "-T", "-u", "0", "app", "/bin/busybox"}, args...)...)
		if code != 0 {
			t.Fatalf("exec busybox %v: exit %d\n%s%s", args, code, out, stderr)
		}
		return out
	}
	stat := bb("stat", "-c", "%n %A %u:%g", "/app/a.txt", "/app/new", "/app/new/nested", "/app/new/nested/b.sh", "/app/link", "/app/new/theirs")
	for _, want := range []string{
		"/app/a.txt -rw-r----- 4321:8765", "/app/new drwxr-xr-x 4321:8765", "/app/new/nested drwxr-xr-x 4321:8765",
		"/app/new/nested/b.sh -rwxr-xr-x 4321:8765", "/app/link lrwxrwxrwx 4321:8765", "/app/new/theirs -rw------- 99:98",
	} {
		if !strings.Contains(stat, want+"\n") {
			t.Errorf("stat lacks %q:\n%s", want, stat)
		}
	}
	if got := bb("readlink", "/app/link"); got != "a.txt\n" {
		t.Errorf("link points to %q", got)
	}
	if got := bb("cat", "/app/link", "/etc/keep"); got != "hello\nimage\n" {
		t.Errorf("through the link and outside: %q", got)
	}
	if got := bb("ls", "-a", "/app", "/etc", "/"); strings.Contains(got, "gone") || strings.Contains(got, "old") ||
		strings.Contains(got, "pwned") || strings.Contains(got, "escape") || strings.Contains(got, "vmsync") {
		t.Errorf("after the sync:\n%s", got)
	}

	// The secrets' directory is refused on the host, and in the guest.
	_, err := supervisor.Sync(ctx, state, &supervisor.Request{Services: []string{"app"}, Sync: &agent.SyncSpec{Target: "/run/secrets/x"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "/run/secrets") {
		t.Errorf("sync into /run/secrets: %v", err)
	}

	// 1 000 files, one request.
	before := syncCount(t, state, "app-1")
	var many []agent.SyncEntry
	for i := range 1000 {
		many = append(many, bytesEntry(fmt.Sprintf("many/%02d/f%d", i%10, i), 0o644, strings.Repeat("y", i)))
	}
	start := time.Now()
	res = sync("", many)
	t.Logf("1 000 files, %d bytes: %v", res.Bytes, time.Since(start))
	if res.Written != 1000 || len(res.Skipped) != 0 || res.Bytes != 999*1000/2 {
		t.Errorf("1 000 files: %+v", res)
	}
	if n := syncCount(t, state, "app-1") - before; n != 1 {
		t.Errorf("1 000 files took %d sync requests, want 1", n)
	}
	if got := bb("find", "/app/many", "-type", "f"); strings.Count(got, "\n") != 1000 {
		t.Errorf("the guest has %d files of 1 000", strings.Count(got, "\n"))
	}
}

// TestRestartProcess restarts a service's process in place: a new pid,
// the same boot, its stop_grace_period honoured (it ignores SIGTERM), no
// restart counted by its policy, ps Up throughout, its healthcheck
// started over.
func TestRestartProcess(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("static", staticImage(t))
	dir := filepath.Join(p.home, "restart")
	p.cleanup(dir)
	state := filepath.Join(p.home, "state", "vmcompose", "restart")
	compose := `services:
  app:
    image: ` + ref + `
    command: ["/bin/busybox", "sh", "-c", "trap '' TERM; echo started $$$$ $$(/bin/busybox cat /proc/sys/kernel/random/boot_id); exec /bin/busybox sleep 1000000"]
    restart: on-failure
    stop_grace_period: 1s
    healthcheck:
      test: ["CMD", "/bin/busybox", "true"]
      interval: 2s
`
	if _, stderr, code := p.in(dir, compose, "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up: exit %d\n%s", code, stderr)
	}
	if e := p.ps(dir)["app"]; e.Health != "healthy" {
		t.Fatalf("before: %+v", e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	done, err := supervisor.RestartProcess(ctx, state, &supervisor.Request{Services: []string{"app"}})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted %+v in %v", done, took)
	if len(done) != 1 || done[0].Instance != "app-1" || done[0].Pid == 0 {
		t.Fatalf("restarted %+v", done)
	}
	if took < time.Second {
		t.Errorf("restart took %v: the grace period (1s) of a process that ignores SIGTERM was not waited", took)
	}
	st, err := reconcile.ReadState(state)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Instances) != 1 || st.Instances[0].Restarts != 0 || st.Instances[0].Health != "starting" {
		t.Errorf("after the restart: %+v", st.Instances)
	}
	started := regexp.MustCompile(`started (\d+) (\S+)`)
	var lines [][]string
	for deadline := time.Now().Add(20 * time.Second); len(lines) < 2 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		lines = started.FindAllStringSubmatch(p.logsOf(dir, "app"), -1)
	}
	if len(lines) != 2 || lines[0][1] == lines[1][1] || lines[0][2] != lines[1][2] || lines[1][1] != fmt.Sprint(done[0].Pid) {
		t.Fatalf("service logs, want two starts, new pid %d, one boot: %q", done[0].Pid, lines)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		e := p.ps(dir)["app"]
		if e.State != "running" || !strings.HasPrefix(e.Status, "Up") {
			t.Fatalf("after the restart: %+v", e)
		}
		if e.Health == "healthy" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not healthy again: %+v", e)
		}
	}
	if st, _ := reconcile.ReadState(state); st.Instances[0].Restarts != 0 {
		t.Errorf("the restart policy counted it: %+v", st.Instances[0])
	}

	// A command synced away cannot start again: the restart says so, and
	// that is the service's exit (its restart policy decides then).
	res, err := supervisor.Sync(ctx, state, &supervisor.Request{Services: []string{"app"}, Sync: &agent.SyncSpec{Target: "/bin"}},
		[]agent.SyncEntry{{Op: agent.SyncDelete, Path: "busybox"}})
	if err != nil || res.Deleted != 1 {
		t.Fatalf("deleting the command: %+v %v", res, err)
	}
	_, err = supervisor.RestartProcess(ctx, state, &supervisor.Request{Services: []string{"app"}})
	if err == nil || !strings.Contains(err.Error(), "/bin/busybox") {
		t.Errorf("restarting a command that is gone: %v", err)
	}
}
