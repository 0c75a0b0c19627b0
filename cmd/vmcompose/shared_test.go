package main_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

// sharedImage pushes busybox with locker (testdata/locker: flock and
// fcntl locks) and /srv/seed.txt, which seeds a volume mounted at /srv.
func sharedImage(t *testing.T, p *runProject) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("shared volumes are served by QEMU's virtiofsd, which needs root")
	}
	bin := filepath.Join(t.TempDir(), "locker")
	build := exec.Command("go", "build", "-o", bin, "./testdata/locker")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building locker: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	return p.push("shared", testimage.Image(t, testimage.BusyboxEntries(t), []testimage.Entry{
		testimage.File("usr/bin/locker", 0o755, string(b)),
		testimage.Dir("srv/", 0o755),
		testimage.File("srv/seed.txt", 0o644, "from the image\n"),
	}))
}

// sleeper is the compose entry of a service of image ref that sleeps,
// with volumes (the YAML after `volumes:`).
func sleeper(name, ref, volumes string) string {
	return "  " + name + ":\n    image: " + ref + "\n    command: [sleep, \"1000\"]\n    stop_grace_period: 1s\n    volumes:" + volumes + "\n"
}

// execIn runs a shell script in service's VM and returns its output,
// failing the test unless it exits 0.
func (p *runProject) execIn(dir, service, script string) string {
	p.t.Helper()
	out, stderr, code := p.in(dir, "", "exec", "-T", service, "sh", "-c", script)
	if code != 0 {
		p.t.Fatalf("exec %s %q: exit %d\n%s%s", service, script, code, out, stderr)
	}
	return out
}

// TestSharedVolume: two services write one named volume at once: each
// reads the other's lines right after they were written; the image's
// content seeds it once, not again on a later up, and not at all with
// nocopy; a flock taken in one VM holds in the other; the data survives
// down and up; down -v removes it.
func TestSharedVolume(t *testing.T) {
	p := newRunProject(t)
	ref := sharedImage(t, p)
	dir := filepath.Join(p.home, "shared")
	p.cleanup(dir)
	vol := filepath.Join(p.home, "state", "vmcompose", "_volumes", "shared_uploads")
	root := filepath.Join(vol, "shared")
	const vols = `
      - uploads:/u
      - seeded:/srv
      - type: volume
        source: bare
        target: /srv2
        volume: {nocopy: true}`
	// r reads what a and b write, and pub, which a alone writes: a
	// reader beside a writer shares a volume too, as QEMU gives a disk
	// image that a VM writes to that VM alone.
	compose := "services:\n" + sleeper("a", ref, vols+"\n      - pub:/p") + sleeper("b", ref, vols) +
		sleeper("r", ref, "\n      - uploads:/u:ro\n      - pub:/p:ro") + `volumes:
  pub: {}
  uploads: {}
  seeded: {}
  bare: {}
`
	start := time.Now()
	_, stderr, code := p.inWith(dir, compose, "plain", "up", "-d", "--wait")
	if code != 0 {
		t.Fatalf("up -d --wait: exit %d\n%s", code, stderr)
	}
	t.Logf("up -d --wait of two VMs with three shared volumes: %s", time.Since(start))
	for v, users := range map[string]string{"uploads": "a, b and r", "seeded": "a and b", "bare": "a and b", "pub": "a and r"} {
		if want := fmt.Sprintf("volume %q is shared by %s: a directory on the host", v, users); !strings.Contains(stderr, want) {
			t.Errorf("up does not say %q:\n%s", want, stderr)
		}
	}

	// Read-your-writes, both ways, with no sync in between.
	for i := range 3 {
		for _, s := range []string{"a", "b"} {
			line := fmt.Sprintf("%s%d", s, i)
			out := p.execIn(dir, s, "echo "+line+" >> /u/log && tail -n 1 /u/log")
			if out != line+"\n" {
				t.Fatalf("%s appended %s and read back %q", s, line, out)
			}
		}
		if out := p.execIn(dir, "a", "tail -n 1 /u/log"); out != fmt.Sprintf("b%d\n", i) {
			t.Fatalf("a reads %q after b wrote b%d", out, i)
		}
	}
	const all = "a0\nb0\na1\nb1\na2\nb2\n"
	if out := p.execIn(dir, "r", "cat /u/log; echo x >> /u/log 2>/dev/null || echo refused"); out != all+"refused\n" {
		t.Errorf("the reader: %q, want the log and a refused write", out)
	}
	p.execIn(dir, "a", "echo published > /p/f")
	if out := p.execIn(dir, "r", "cat /p/f"); out != "published\n" {
		t.Errorf("r reads %q of what a alone writes", out)
	}
	if b, err := os.ReadFile(filepath.Join(root, "data", "log")); err != nil || string(b) != all {
		t.Errorf("the host's copy of the log: %q, %v", b, err)
	}
	if out := p.execIn(dir, "b", "mount | grep ' /u ' | cut -d' ' -f5; ls -A /u"); out != "virtiofs\nlog\n" {
		t.Errorf("/u in the guest: %q, want a virtiofs mount of the data alone", out)
	}

	// Seeded once, by one of the two; nocopy: never.
	if out := p.execIn(dir, "a", "cat /srv/seed.txt; ls -A /srv2 | wc -l"); out != "from the image\n0\n" {
		t.Errorf("seeding: %q", out)
	}
	p.execIn(dir, "b", "rm /srv/seed.txt")

	// flock and fcntl locks across VMs, when they do not block.
	holder, _, holderErr := p.background(dir, "locked", "exec", "-T", "a", "locker", "flock", "/u/lock", "4")
	if out, _, code := p.in(dir, "", "exec", "-T", "b", "locker", "flock-n", "/u/lock"); code != 1 || out != "busy\n" {
		t.Errorf("flock -n in b while a holds it: exit %d, %q; want busy", code, out)
	}
	if err := holder.Wait(); err != nil {
		t.Fatalf("a's flock: %v\n%s", err, holderErr)
	}
	if out, _, code := p.in(dir, "", "exec", "-T", "b", "locker", "flock-n", "/u/lock"); code != 0 || out != "locked\n" {
		t.Errorf("flock -n in b once a let go: exit %d, %q", code, out)
	}
	// A blocking flock, even of a free lock, is refused (README says so).
	if out, _, code := p.in(dir, "", "exec", "-T", "b", "locker", "flock-w", "/u/lock"); code != 1 || out != "operation not supported\n" {
		t.Errorf("blocking flock in b: exit %d, %q; want operation not supported", code, out)
	}
	holder, _, holderErr = p.background(dir, "locked", "exec", "-T", "a", "locker", "fcntl", "/u/lock2", "4")
	if out, _, code := p.in(dir, "", "exec", "-T", "b", "locker", "fcntl-n", "/u/lock2"); code != 1 || out != "busy\n" {
		t.Errorf("fcntl F_SETLK in b while a holds it: exit %d, %q; want busy", code, out)
	}
	out, _, code := p.in(dir, "", "exec", "-T", "b", "locker", "fcntl-w", "/u/lock2")
	t.Logf("fcntl F_SETLKW in b while a holds it: exit %d, %q", code, out)
	if code != 1 || out != "operation not supported\n" {
		t.Errorf("fcntl F_SETLKW in b while a holds it: exit %d, %q; want operation not supported (README says so)", code, out)
	}
	if err := holder.Wait(); err != nil {
		t.Fatalf("a's fcntl lock: %v\n%s", err, holderErr)
	}
	if out, _, code := p.in(dir, "", "exec", "-T", "b", "locker", "fcntl-w", "/u/lock2"); code != 1 || out != "operation not supported\n" {
		t.Errorf("fcntl F_SETLKW of a free lock: exit %d, %q; want operation not supported", code, out)
	}
	if out, _, code := p.in(dir, "", "exec", "-T", "b", "locker", "fcntl-n", "/u/lock2"); code != 0 || out != "locked\n" {
		t.Errorf("fcntl F_SETLK in b once a let go: exit %d, %q", code, out)
	}

	// down keeps the data; up does not seed again.
	if _, stderr, code := p.in(dir, "", "down", "-t", "0"); code != 0 {
		t.Fatalf("down: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(root, "data", "log")); err != nil {
		t.Fatalf("down removed the shared volume's data: %v", err)
	}
	if _, stderr, code := p.in(dir, "", "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up after down: exit %d\n%s", code, stderr)
	}
	if out := p.execIn(dir, "b", "cat /u/log; ls -A /srv | wc -l"); out != all+"0\n" {
		t.Errorf("after down and up: %q, want the log and an unseeded /srv", out)
	}
	if _, stderr, code := p.in(dir, "", "down", "-v", "-t", "0"); code != 0 {
		t.Fatalf("down -v: exit %d\n%s", code, stderr)
	}
	if _, err := os.Stat(vol); !os.IsNotExist(err) {
		t.Errorf("down -v left %s: %v", vol, err)
	}
}

// TestSharedVolumeScale: three replicas append to one file of a shared
// volume at once, and every line is there.
func TestSharedVolumeScale(t *testing.T) {
	p := newRunProject(t)
	ref := sharedImage(t, p)
	dir := filepath.Join(p.home, "scale")
	p.cleanup(dir)
	compose := `services:
  worker:
    image: ` + ref + `
    command: ["sh", "-c", "for i in $$(seq 50); do echo $$(hostname) $$i >> /u/log; done; sleep 1000"]
    stop_grace_period: 1s
    volumes: ["uploads:/u"]
volumes:
  uploads: {}
`
	if _, stderr, code := p.in(dir, compose, "up", "-d", "--wait", "--scale", "worker=3"); code != 0 {
		t.Fatalf("up --scale worker=3: exit %d\n%s", code, stderr)
	}
	log := filepath.Join(p.home, "state", "vmcompose", "_volumes", "scale_uploads", "shared", "data", "log")
	var lines []string
	for deadline := time.Now().Add(60 * time.Second); len(lines) < 150 && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		lines = readLines(t, log)
	}
	counts := map[string]int{}
	for _, l := range lines {
		counts[strings.Fields(l)[0]]++
	}
	if len(lines) != 150 || len(counts) != 3 {
		t.Errorf("%d lines from %d writers, want 150 from 3: %v", len(lines), len(counts), counts)
	}
	p.in(dir, "", "down", "-v", "-t", "0")
}

func readLines(t *testing.T, path string) []string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	sort.Strings(out)
	return out
}

// TestVolumeBecomesShared: a volume one service wrote as a disk image
// becomes shared when a second writer comes: plan shows the writer's VM
// recreated, up says the data moved, and both see it.
func TestVolumeBecomesShared(t *testing.T) {
	p := newRunProject(t)
	ref := sharedImage(t, p)
	dir := filepath.Join(p.home, "grow")
	p.cleanup(dir)
	img := filepath.Join(p.home, "state", "vmcompose", "_volumes", "grow_uploads", "disk.img")
	one := "services:\n" + sleeper("web", ref, ` ["uploads:/u"]`) + "volumes:\n  uploads: {driver_opts: {size: 32m}}\n"
	two := "services:\n" + sleeper("web", ref, ` ["uploads:/u"]`) + sleeper("worker", ref, ` ["uploads:/u"]`) + "volumes:\n  uploads: {driver_opts: {size: 32m}}\n"
	if _, stderr, code := p.in(dir, one, "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up of one writer: exit %d\n%s", code, stderr)
	}
	p.execIn(dir, "web", "mkdir -p /u/d && echo kept > /u/d/f && chown 1000:1000 /u/d/f && chmod 1777 /u/d && ln -s d/f /u/link && sync")
	if _, err := os.Stat(img); err != nil {
		t.Fatalf("one writer: no disk image: %v", err)
	}

	out, stderr, code := p.in(dir, two, "plan")
	if code != 0 || !strings.Contains(out, `recreate  web-1     volumes: "uploads" becomes shared`) ||
		!strings.Contains(out, `"uploads" becomes shared by web and worker: a directory on the host (web-1 has it as a disk: its data moves into the directory once it is removed)`) {
		t.Errorf("plan: exit %d\n%s%s", code, out, stderr)
	}
	_, stderr, code = p.inWith(dir, two, "plain", "up", "-d", "--wait")
	if code != 0 {
		t.Fatalf("up of two writers: exit %d\n%s", code, stderr)
	}
	if want := `volume "uploads" is now shared by web and worker: moved its data from its disk image into a directory`; !strings.Contains(stderr, want) {
		t.Errorf("up does not say %q:\n%s", want, stderr)
	}
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Errorf("the disk image is still there: %v", err)
	}
	for _, s := range []string{"web", "worker"} {
		if out := p.execIn(dir, s, "cat /u/link; stat -c '%u:%g %a' /u/d/f /u/d"); out != "kept\n1000:1000 644\n0:0 1777\n" {
			t.Errorf("%s sees %q", s, out)
		}
	}
	if out, _, _ := p.in(dir, two, "plan"); !strings.Contains(out, "nothing to do") {
		t.Errorf("plan after up:\n%s", out)
	}
	p.in(dir, "", "down", "-v", "-t", "0")
}
