package main_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

// virtiofsds lists the live virtiofsd processes serving a share of a VM
// under dir.
func virtiofsds(dir string) []int {
	return pidsWhere(func(pid int, b []byte) bool {
		if !bytes.Contains(b, []byte("virtiofsd")) || !bytes.Contains(b, []byte("source="+dir)) {
			return false
		}
		stat, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		return !bytes.Contains(stat, []byte(") Z ")) // a zombie has ended
	})
}

// TestBindMounts: bind mounts of the short and long syntax, relative to the
// project directory, of directories and a file, read-write and read-only,
// with up, exec and down as a dev loop uses them; a missing source is
// created; a new supervisor adopts the VM with its virtiofsd; none
// outlives its VM, killed or taken down.
func TestBindMounts(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("QEMU's virtiofsd needs root")
	}
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	dir := filepath.Join(p.home, "binds")
	p.cleanup(dir)
	state := filepath.Join(p.home, "state", "vmcompose", "binds")
	t.Cleanup(func() {
		for _, pid := range virtiofsds(p.home) {
			t.Errorf("virtiofsd %d left running", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	write := func(name, s string) {
		t.Helper()
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("site/index.html", "hello\n")
	write("seed/data.txt", "seed\n")
	write("app.conf", "mode=dev\n")
	compose := `services:
  web:
    image: ` + ref + `
    command: [sleep, "1000"]
    stop_grace_period: 1s
    volumes:
      - ./site:/srv/site
      - ./seed:/seed:ro
      - ./app.conf:/etc/app.conf:ro
      - ./made:/made
      - type: bind
        source: ./long
        target: /long
        bind: {propagation: rshared}
`
	start := time.Now()
	_, stderr, code := p.inWith(dir, compose, "plain", "up", "-d", "--wait")
	if code != 0 {
		t.Fatalf("up -d --wait: exit %d\n%s", code, stderr)
	}
	t.Logf("up -d --wait with 5 bind mounts: %s", time.Since(start))
	if !strings.Contains(stderr, `warning: service "web": volumes: bind mount at /long: bind.propagation "rshared" is ignored`) {
		t.Errorf("no warning about bind.propagation:\n%s", stderr)
	}
	for _, d := range []string{"made", "long"} {
		if fi, err := os.Stat(filepath.Join(dir, d)); err != nil || !fi.IsDir() {
			t.Errorf("missing bind source ./%s: %v, %v; want a directory made", d, fi, err)
		}
	}
	exec := func(script string) (string, int) {
		t.Helper()
		out, stderr, code := p.in(dir, "", "exec", "-T", "web", "sh", "-c", script)
		if code != 0 && code != 1 {
			t.Fatalf("exec %q: exit %d\n%s", script, code, stderr)
		}
		return strings.TrimSpace(out), code
	}
	check := func(what, script, want string) {
		t.Helper()
		if got, _ := exec(script); got != want {
			t.Errorf("%s: %q, want %q", what, got, want)
		}
	}
	check("host files", "cat /srv/site/index.html /seed/data.txt /etc/app.conf", "hello\nseed\nmode=dev")
	check("guest write", "echo from guest > /srv/site/guest.txt && echo ok", "ok")
	if b, err := os.ReadFile(filepath.Join(dir, "site", "guest.txt")); err != nil || string(b) != "from guest\n" {
		t.Errorf("the guest's file on the host: %q, %v", b, err)
	}
	write("site/index.html", "edited on the host\n")
	check("host edit", "cat /srv/site/index.html", "edited on the host")
	check(":ro directory", "(touch /seed/x) 2>/dev/null && echo written || echo refused", "refused")
	check(":ro file", "(echo x >> /etc/app.conf) 2>/dev/null && echo written || echo refused", "refused")
	check("created source", "touch /made/m /long/l && echo ok", "ok")
	for _, f := range []string{"made/m", "long/l"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("the guest's %s on the host: %v", f, err)
		}
	}
	if n := len(virtiofsds(state)); n == 0 {
		t.Fatal("no virtiofsd serves the running VM")
	}

	// A VM killed from outside takes its daemons with it.
	qs := qemus(state)
	if len(qs) != 1 {
		t.Fatalf("qemu processes: %v, want 1", qs)
	}
	syscall.Kill(qs[0], syscall.SIGKILL)
	if left := waitGone(virtiofsds, state); len(left) > 0 {
		t.Errorf("virtiofsd left after its qemu was killed: %v", left)
	}
	if _, stderr, code := p.in(dir, "", "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up -d --wait after the kill: exit %d\n%s", code, stderr)
	}
	check("shares after a restart", "cat /srv/site/guest.txt", "from guest")

	// A supervisor that dies leaves the VM and its daemons running; the
	// next one adopts them as they are.
	sups, daemons := supervisors(state), virtiofsds(state)
	if len(sups) != 1 {
		t.Fatalf("supervisors %v, want 1", sups)
	}
	syscall.Kill(sups[0], syscall.SIGKILL)
	if left := waitGone(supervisors, state); len(left) != 0 {
		t.Fatalf("supervisor %v survived SIGKILL", left)
	}
	if _, stderr, code := p.in(dir, "", "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up after the supervisor was killed: exit %d\n%s", code, stderr)
	}
	if after := virtiofsds(state); fmt.Sprint(after) != fmt.Sprint(daemons) {
		t.Errorf("virtiofsd processes before the supervisor died %v, after adoption %v: want the same", daemons, after)
	}
	write("site/index.html", "edited after adoption\n")
	check("shares after adoption", "cat /srv/site/index.html", "edited after adoption")

	if _, stderr, code := p.in(dir, "", "down", "-t", "0"); code != 0 {
		t.Fatalf("down: exit %d\n%s", code, stderr)
	}
	if left := virtiofsds(state); len(left) > 0 {
		t.Errorf("virtiofsd left after down: %v", left)
	}
	// down removes the VM, never the shared files.
	for _, f := range []string{"site/index.html", "site/guest.txt", "seed/data.txt", "app.conf", "made/m"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("after down: %v", err)
		}
	}
}
