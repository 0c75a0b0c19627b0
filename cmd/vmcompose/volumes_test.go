package main_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testenv"
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
	img := filepath.Join(p.home, "state", "vmcompose", "_volumes", "vols_data", "disk.img")
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

	// Two writers of a disk volume, and a bind mount of nothing that must
	// not be created: refused, naming what.
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
  shared: {driver_opts: {sharing: disk}}
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
	data := filepath.Join(p.home, "state", "vmcompose", "_volumes", "project_data", "disk.img")
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

// TestNewVolumeIsEmpty runs Debian's PostgreSQL with its data directory
// on a new named volume, as its image is used (PGDATA at the mount
// point): initdb refuses a directory that is not empty, so a new volume
// must show nothing, not ext4's lost+found. The volume's disk passes
// e2fsck -fn once the VM is off, the cluster is there after down and up,
// and a read-only user sees the same files.
func TestNewVolumeIsEmpty(t *testing.T) {
	const pg = "/usr/lib/postgresql/15"
	if _, err := os.Stat(pg + "/bin/initdb"); err != nil {
		testenv.Missing(t, "Debian's postgresql-15 is not installed (scripts/setup installs it): %v", err)
	}
	p := newRunProject(t)
	importExampleImage(t, p, "-ref", "vmcompose.local/postgres:15", "-busybox", "-ldd",
		pg+"/bin/initdb", pg+"/bin/postgres", pg, "/usr/share/postgresql/15")
	dir := filepath.Join(p.home, "pg")
	p.cleanup(dir)
	img := filepath.Join(p.home, "state", "vmcompose", "_volumes", "pg_pgdata", "disk.img")

	// What the image's docker-entrypoint.sh does: the data directory
	// becomes postgres's, initdb runs when there is no cluster yet.
	const script = `set -e
grep -q ^postgres: /etc/passwd 2>/dev/null || echo 'postgres:x:101:104::/var/lib/postgresql:/bin/sh' >> /etc/passwd
echo "ls=$(ls -A "$PGDATA" | tr '\n' ' ')"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
	chown postgres "$PGDATA"
	chmod 700 "$PGDATA"
	su -s /bin/sh postgres -c "initdb -D '$PGDATA' --no-sync --no-instructions -A trust -U postgres --locale=C -E UTF8"
	echo 'initdb ok'
fi
echo "version=$(cat "$PGDATA/PG_VERSION")"
`
	compose := `services:
  db:
    image: vmcompose.local/postgres:15
    environment:
      PGDATA: /var/lib/postgresql/data
      PATH: ` + pg + `/bin:/usr/bin:/bin
    command: ["sh", "-c", ` + quote(script) + `]
    volumes: ["pgdata:/var/lib/postgresql/data"]
    x-vm: {memory: 512m}
volumes:
  pgdata:
    driver_opts: {size: 256m}
`
	reader := `services:
  reader:
    image: vmcompose.local/postgres:15
    command: ["sh", "-c", "echo \"ro=$$(ls -A /var/lib/postgresql/data | tr '\\n' ' ')\"; cat /var/lib/postgresql/data/PG_VERSION"]
    volumes: ["pgdata:/var/lib/postgresql/data:ro"]
volumes:
  pgdata:
    driver_opts: {size: 256m}
`
	job := func(what, compose, service string) string {
		t.Helper()
		start := time.Now()
		if _, stderr, code := p.in(dir, compose, "up", "-d", "--wait"); code != 0 {
			t.Fatalf("%s: up -d --wait: exit %d\n%s", what, code, stderr)
		}
		// ps may show the VM off a moment before its supervisor has
		// recorded the exit code (-1 until then).
		e := p.ps(dir)[service]
		for deadline := time.Now().Add(3 * time.Minute); e.State != "exited" || e.ExitCode == -1; e = p.ps(dir)[service] {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %s did not exit: %+v", what, service, e)
			}
			time.Sleep(200 * time.Millisecond)
		}
		out, _, _ := p.in(dir, "", "logs", "--no-log-prefix", service)
		if e.ExitCode != 0 {
			t.Fatalf("%s: %s exited with %d:\n%s", what, service, e.ExitCode, out)
		}
		t.Logf("%s: %s", what, time.Since(start))
		return out
	}
	fsck := func(what string) {
		t.Helper()
		if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
			t.Errorf("%s: e2fsck -fn %s: %v\n%s", what, img, err, out)
		}
	}

	out := job("first up", compose, "db")
	if !strings.Contains(out, "ls=\n") || !strings.Contains(out, "initdb ok\n") || !strings.Contains(out, "version=15\n") {
		t.Fatalf("first up: the new volume is not empty, or initdb failed:\n%s", out)
	}
	fsck("after the first run")
	if _, stderr, code := p.in(dir, "", "down", "-t", "0"); code != 0 {
		t.Fatalf("down: exit %d\n%s", code, stderr)
	}
	out = job("up after down", compose, "db")
	if strings.Contains(out, "initdb ok") || !strings.Contains(out, "ls=PG_VERSION base global ") || !strings.Contains(out, "version=15\n") {
		t.Errorf("up after down: the cluster is gone:\n%s", out)
	}
	if strings.Contains(out, "lost+found") {
		t.Errorf("up after down: lost+found shows in the volume:\n%s", out)
	}
	fsck("after the second run")
	if _, stderr, code := p.in(dir, "", "down", "-t", "0"); code != 0 {
		t.Fatalf("down: exit %d\n%s", code, stderr)
	}
	out = job("read-only user", reader, "reader")
	if !strings.Contains(out, "ro=PG_VERSION base global ") || strings.Contains(out, "lost+found") || !strings.HasSuffix(out, "\n15\n") {
		t.Errorf("read-only user: not the cluster:\n%s", out)
	}
}
