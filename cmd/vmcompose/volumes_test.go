package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

// TestVolumes: a named volume keeps its data across down and up, and down
// -v removes it; :ro volumes cannot be written; tmpfs entries and tmpfs
// volumes are tmpfs; two writers of one volume, and a bind mount of a
// missing source with create_host_path: false, are refused before
// anything boots.
func TestVolumes(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	dir := filepath.Join(p.home, "vols")
	bad := filepath.Join(p.home, "bad")
	p.cleanup(dir, bad)
	state := filepath.Join(p.home, "state", "vmcompose", "vols")

	const script = `m() { awk -v t="$1" '$2 == t {print $3, $4}' /proc/mounts | cut -d, -f1; }
echo "before=$(cat /data/f 2>/dev/null || echo none)"
echo hello > /data/f && sync
echo "data=$(m /data)"
echo "ro=$(m /ro) $(touch /ro/x 2>/dev/null && echo writable || echo refused)"
echo "anon=$(m /anon) $(touch /anon/x && echo writable)"
echo "t1=$(m /t1) t2=$(m /t2)"
`
	compose := `services:
  app:
    image: ` + ref + `
    command: ["sh", "-c", ` + quote(script) + `]
    tmpfs: ["/t1:size=1m"]
    volumes:
      - data:/data
      - seed:/ro:ro
      - /anon
      - type: tmpfs
        target: /t2
        tmpfs: {size: 2m}
volumes:
  data:
    driver_opts: {size: 64m}
  seed: {}
`
	upLogs := func(what string) string {
		t.Helper()
		start := time.Now()
		if _, stderr, code := p.in(dir, compose, "up", "-d", "--wait"); code != 0 {
			t.Fatalf("%s: up -d --wait: exit %d\n%s", what, code, stderr)
		}
		// --wait does not wait for a job nothing depends on: wait for
		// it to exit.
		for deadline := time.Now().Add(60 * time.Second); p.ps(dir)["app"].State != "exited"; time.Sleep(100 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: app did not exit: %+v", what, p.ps(dir))
			}
		}
		out, stderr, code := p.in(dir, "", "logs", "--no-log-prefix", "app")
		if code != 0 {
			t.Fatalf("%s: logs: exit %d\n%s", what, code, stderr)
		}
		t.Logf("%s: up -d --wait and logs: %s", what, time.Since(start))
		return out
	}
	down := func(args ...string) {
		t.Helper()
		if _, stderr, code := p.in(dir, "", append([]string{"down", "-t", "0"}, args...)...); code != 0 {
			t.Fatalf("down %v: exit %d\n%s", args, code, stderr)
		}
	}

	out := upLogs("first up")
	for _, want := range []string{"before=none", "data=ext4 rw", "ro=ext4 ro refused", "anon=ext4 rw writable", "t1=tmpfs rw t2=tmpfs rw"} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("first up: logs lack %q:\n%s", want, out)
		}
	}
	img := filepath.Join(state, "volumes", "data.img")
	if fi, err := os.Stat(img); err != nil || fi.Size() != 64<<20 {
		t.Fatalf("volume image %s: %v %v", img, fi, err)
	}
	anon, _ := filepath.Glob(filepath.Join(state, "volumes", "anonymous", "app-1", "*.img"))
	if len(anon) != 1 {
		t.Errorf("anonymous volumes of app-1: %v", anon)
	}

	down()
	if _, err := os.Stat(img); err != nil {
		t.Fatalf("down removed the volume: %v", err)
	}
	if anon, _ := filepath.Glob(filepath.Join(state, "volumes", "anonymous", "*")); len(anon) != 0 {
		t.Errorf("down left anonymous volumes: %v", anon)
	}
	if out := upLogs("up after down"); !strings.Contains(out, "before=hello\n") {
		t.Errorf("the volume lost its data across down and up:\n%s", out)
	}

	down("-v")
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Fatalf("down -v left %s: %v", img, err)
	}
	if out := upLogs("up after down -v"); !strings.Contains(out, "before=none\n") {
		t.Errorf("up after down -v: the volume is not empty:\n%s", out)
	}
	down("-v")
	// down -v once nothing runs still removes the volumes.
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Fatalf("down -v left %s: %v", img, err)
	}

	// Two writers of one volume, and a bind mount of nothing that must not
	// be created: refused, naming what.
	two := `services:
  a:
    image: ` + ref + `
    volumes: ["shared:/s"]
  b:
    image: ` + ref + `
    volumes: ["shared:/s"]
  c:
    image: ` + ref + `
    volumes: ["shared:/s:ro"]
volumes:
  shared: {}
`
	_, stderr, code := p.in(bad, two, "up", "-d")
	if code == 0 || !strings.Contains(stderr, `"shared"`) || !strings.Contains(stderr, `"a"`) || !strings.Contains(stderr, `"b"`) {
		t.Errorf("two writers of a volume: exit %d\n%s", code, stderr)
	}
	bind := `services:
  a:
    image: ` + ref + `
    volumes:
      - type: bind
        source: ./src
        target: /src
        bind: {create_host_path: false}
`
	_, stderr, code = p.in(bad, bind, "up", "-d")
	if code == 0 || !strings.Contains(stderr, "create_host_path is false") || !strings.Contains(stderr, filepath.Join(bad, "src")) || !strings.Contains(stderr, `"a"`) {
		t.Errorf("bind mount of a missing source with create_host_path: false: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(bad, "src")); err == nil {
		t.Error("create_host_path: false created the source")
	}
}

// quote makes s a YAML double-quoted string that compose does not
// interpolate.
func quote(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "$", "$$")
	return `"` + r.Replace(s) + `"`
}

// TestRunVolumes: a run VM keeps its anonymous volume while it exists;
// run --rm removes it with the VM, as docker compose run --rm does, and
// keeps the named volume.
func TestRunVolumes(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	state := filepath.Join(p.home, "state", "vmcompose", "project")
	compose := `services:
  svc:
    image: ` + ref + `
    volumes: ["data:/data", "/anon"]
  reader:
    image: ` + ref + `
    volumes: ["data:/data:ro"]
volumes:
  data:
    driver_opts: {size: 16m}
`
	anon := func(vm string) []string {
		files, _ := filepath.Glob(filepath.Join(state, "volumes", "anonymous", vm, "*.img"))
		return files
	}
	data := filepath.Join(state, "volumes", "data.img")
	steps := []struct {
		args   []string
		stdout string
		anon   int // images of keep's anonymous volume after the step
	}{
		{[]string{"run", "--name", "keep", "svc", "sh", "-c", "echo a > /anon/f; echo d > /data/f; sync; cat /anon/f /data/f"}, "a\nd\n", 1},
		{[]string{"run", "--rm", "--name", "keep", "svc", "cat", "/anon/f", "/data/f"}, "a\nd\n", 0},
		{[]string{"run", "--rm", "--name", "keep", "svc", "sh", "-c", "cat /anon/f 2>/dev/null || echo empty; cat /data/f"}, "empty\nd\n", 0},
		// A volume a VM wrote is left clean at power-off: a read-only
		// user, which cannot replay a journal, mounts it.
		{[]string{"run", "--rm", "svc", "sh", "-c", "echo e >> /data/f"}, "", 0},
		{[]string{"run", "--rm", "reader", "cat", "/data/f"}, "d\ne\n", 0},
	}
	for i, s := range steps {
		stdout, stderr, code := p.run(compose, s.args...)
		if code != 0 || stdout != s.stdout {
			t.Fatalf("step %d: exit %d, stdout %q, want %q\nstderr: %s", i, code, stdout, s.stdout, stderr)
		}
		if got := anon("keep"); len(got) != s.anon {
			t.Errorf("step %d (%v): anonymous volume images of keep: %v, want %d", i, s.args, got, s.anon)
		}
		if _, err := os.Stat(data); err != nil {
			t.Errorf("step %d: the named volume is gone: %v", i, err)
		}
	}
	if _, stderr, code := p.run(compose, "run", "--rm", "svc", "true"); code != 0 {
		t.Fatalf("run --rm svc true: exit %d\n%s", code, stderr)
	}
	if left, _ := filepath.Glob(filepath.Join(state, "volumes", "anonymous", "*")); len(left) != 0 {
		t.Errorf("anonymous volumes left after run --rm: %v", left)
	}
}
