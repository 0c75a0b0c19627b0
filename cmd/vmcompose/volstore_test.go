package main_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testimage"
	"github.com/vmcompose/vmcompose/vm"
)

// until polls cond every 100 ms for up to a minute, then fails with what.
func until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s", what)
		}
	}
}

// logsOf returns what service has printed.
func (p *runProject) logsOf(dir, service string) string {
	p.t.Helper()
	out, _, _ := p.in(dir, "", "logs", "--no-log-prefix", service)
	return out
}

// exited waits until service's VM has exited and its exit code is recorded.
func (p *runProject) exited(dir, service string) psEntry {
	p.t.Helper()
	var e psEntry
	until(p.t, service+" to exit", func() bool {
		e = p.ps(dir)[service]
		return e.State == "exited" && e.ExitCode != -1
	})
	return e
}

// TestVolumeStore: volumes are global by name: volume create, ls,
// inspect, rm and prune as docker's; an external volume must exist; two
// projects naming one volume share it, but never attach it read-write to
// two VMs at once; rm refuses a volume a VM uses; down -v removes the
// project's own volumes only.
func TestVolumeStore(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	one, two, miss := filepath.Join(p.home, "one"), filepath.Join(p.home, "two"), filepath.Join(p.home, "miss")
	p.cleanup(one, two, miss)
	store := filepath.Join(p.home, "state", "vmcompose", "_volumes")
	volume := func(args ...string) (string, string, int) {
		t.Helper()
		return p.in(p.home, "", append([]string{"volume"}, args...)...)
	}
	names := func() string {
		t.Helper()
		out, stderr, code := volume("ls", "-q")
		if code != 0 {
			t.Fatalf("volume ls -q: exit %d: %s", code, stderr)
		}
		return strings.Join(strings.Fields(out), " ")
	}

	if out, stderr, code := volume("create", "--opt", "size=32m", "--label", "team=a", "byhand"); code != 0 || out != "byhand\n" {
		t.Fatalf("volume create: exit %d, %q, %s", code, out, stderr)
	}
	if _, stderr, code := volume("create", "--opt", "type=nfs", "bad"); code == 0 || !strings.Contains(stderr, "volume bad: --opt type is not supported: the options are size and sharing") {
		t.Errorf("volume create --opt type=nfs: exit %d, %s", code, stderr)
	}
	missing := "services:\n  app:\n    image: " + ref + "\n    volumes: [\"ext:/e\"]\nvolumes:\n  ext: {external: true, name: nope}\n"
	if _, stderr, code := p.in(miss, missing, "up", "-d"); code == 0 || !strings.Contains(stderr, "external volume \"nope\" does not exist: create it with `vmcompose volume create nope`") {
		t.Errorf("up with a missing external volume: exit %d, %s", code, stderr)
	}

	composeOne := `services:
  app:
    image: ` + ref + `
    command: ["sh", "-c", "echo one >> /c/f; echo one > /d/f; echo ext >> /e/f; sync; echo ready; exec sleep 1000"]
    volumes: ["common:/c", "data:/d", "ext:/e"]
volumes:
  common: {name: common}
  data: {}
  ext: {external: true, name: byhand}
`
	if _, stderr, code := p.in(one, composeOne, "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up one: exit %d, %s", code, stderr)
	}
	until(t, "one's app to be ready", func() bool { return strings.Contains(p.logsOf(one, "app"), "ready\n") })
	if got := names(); got != "byhand common one_data" {
		t.Errorf("volume ls -q: %s", got)
	}
	if out, _, code := p.in(one, "", "volumes", "-q"); code != 0 || out != "common\none_data\nbyhand\n" {
		t.Errorf("volumes -q: exit %d, %q", code, out)
	}
	out, stderr, code := volume("ls", "--format", "json")
	var row struct{ Driver, Name, Kind, Mountpoint, Labels, Scope string }
	if first, _, _ := strings.Cut(out, "\n"); code != 0 || json.Unmarshal([]byte(first), &row) != nil || row.Name != "byhand" || row.Driver != "local" ||
		row.Kind != "disk" || row.Labels != "team=a" || row.Mountpoint != filepath.Join(store, "byhand", "disk.img") {
		t.Errorf("volume ls --format json: exit %d, %+v\n%s%s", code, row, out, stderr)
	}
	out, stderr, code = volume("inspect", "one_data")
	var inspect []struct {
		Name, Driver, Mountpoint, Scope, CreatedAt string
		Labels, Options                            map[string]string
	}
	if code != 0 || json.Unmarshal([]byte(out), &inspect) != nil || len(inspect) != 1 {
		t.Fatalf("volume inspect: exit %d\n%s%s", code, out, stderr)
	}
	if v := inspect[0]; v.Name != "one_data" || v.Driver != "local" || v.Scope != "local" || v.Mountpoint != filepath.Join(store, "one_data", "disk.img") ||
		v.Labels["com.docker.compose.project"] != "one" || v.Labels["com.docker.compose.volume"] != "data" || v.CreatedAt == "" {
		t.Errorf("volume inspect one_data: %+v", v)
	}

	// In use: rm refuses, prune leaves it, another project cannot
	// attach it beside the writer.
	if _, stderr, code := volume("rm", "one_data"); code == 0 || !strings.Contains(stderr, "volume one_data is in use by VM app-1 of project one (running)") {
		t.Errorf("volume rm of a volume in use: exit %d, %s", code, stderr)
	}
	if out, _, code := volume("prune", "-f", "--all"); code != 0 || strings.Contains(out, "Deleted") || names() != "byhand common one_data" {
		t.Errorf("volume prune -f --all with every volume in use: exit %d, %q, left %s", code, out, names())
	}
	composeTwo := `services:
  app:
    image: ` + ref + `
    command: ["sh", "-c", "cat /c/f; echo two >> /c/f; echo own > /o/f"]
    volumes: ["common:/c", "own:/o"]
volumes:
  common: {name: common}
  own: {}
`
	if _, stderr, code := p.in(two, composeTwo, "up", "-d"); code == 0 || !strings.Contains(stderr, "volume common is in use by VM app-1 of project one") {
		t.Errorf("up of two while one writes common: exit %d, %s", code, stderr)
	}
	p.in(two, "", "down", "-t", "0")

	if _, stderr, code := p.in(one, "", "stop", "-t", "0"); code != 0 {
		t.Fatalf("stop one: exit %d, %s", code, stderr)
	}
	if _, stderr, code := volume("rm", "one_data"); code == 0 || !strings.Contains(stderr, "VM app-1 of project one (stopped)") {
		t.Errorf("volume rm of a volume a stopped VM refers to: exit %d, %s", code, stderr)
	}
	if _, stderr, code := p.in(one, "", "down", "-t", "0"); code != 0 {
		t.Fatalf("down one: exit %d, %s", code, stderr)
	}

	// name: shares the volume between projects.
	if _, stderr, code := p.in(two, composeTwo, "up", "-d"); code != 0 {
		t.Fatalf("up two: exit %d, %s", code, stderr)
	}
	if e := p.exited(two, "app"); e.ExitCode != 0 || p.logsOf(two, "app") != "one\n" {
		t.Errorf("two's app: %+v, %q; want what one wrote in common", e, p.logsOf(two, "app"))
	}
	if got := names(); got != "byhand common one_data two_own" {
		t.Errorf("volume ls -q: %s", got)
	}
	if _, stderr, code := p.inWith(two, "", "plain", "down", "-v", "-t", "0"); code != 0 || !strings.Contains(stderr, "Volume two_own Removed") || strings.Contains(stderr, "common") {
		t.Errorf("down -v of two: exit %d, %s", code, stderr)
	}
	if got := names(); got != "byhand common one_data" {
		t.Errorf("after down -v of two: %s; want one's and the external volume kept", got)
	}
	if _, stderr, code := p.in(one, "", "down", "-v"); code != 0 {
		t.Errorf("down -v of one: exit %d, %s", code, stderr)
	}
	if got := names(); got != "byhand" {
		t.Errorf("after down -v of one: %s; want the external volume kept", got)
	}
	if out, _, code := volume("prune", "-f"); code != 0 || !strings.Contains(out, "Deleted Volumes:\nbyhand\n") || names() != "" {
		t.Errorf("volume prune -f: exit %d, %q, left %s", code, out, names())
	}
	if ents, _ := os.ReadDir(store); len(ents) != 0 {
		t.Errorf("the store holds %v", ents)
	}
}

// TestVolumeMigration: the volumes of an earlier version, in the
// project's state dir and, for external ones, as <name>.img in the store's
// directory, are moved into the store on first use with their data, and
// up says so once.
func TestVolumeMigration(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	dir := filepath.Join(p.home, "mig")
	p.cleanup(dir)
	state := filepath.Join(p.home, "state", "vmcompose")
	oldData, oldExt := filepath.Join(state, "mig", "volumes", "data.img"), filepath.Join(state, "_volumes", "oldext.img")
	for img, content := range map[string]string{oldData: "kept data\n", oldExt: "kept ext\n"} {
		os.MkdirAll(filepath.Dir(img), 0o700)
		// The volumes of earlier versions had their data at the root.
		if err := vm.CreateScratch(t.Context(), img, 16<<20); err != nil {
			t.Fatal(err)
		}
		src := filepath.Join(t.TempDir(), "f")
		os.WriteFile(src, []byte(content), 0o644)
		if out, err := exec.Command("debugfs", "-w", "-R", "write "+src+" f", img).CombinedOutput(); err != nil {
			t.Fatalf("debugfs: %v %s", err, out)
		}
	}
	compose := `services:
  app:
    image: ` + ref + `
    command: ["cat", "/d/f", "/e/f"]
    volumes: ["data:/d", "ext:/e:ro"]
volumes:
  data: {}
  ext: {external: true, name: oldext}
`
	_, stderr, code := p.inWith(dir, compose, "plain", "up", "-d")
	if code != 0 {
		t.Fatalf("up: exit %d, %s", code, stderr)
	}
	for _, want := range []string{"Moved volume mig_data from " + oldData, "Moved volume oldext from " + oldExt} {
		if !strings.Contains(stderr, want) {
			t.Errorf("up does not say %q:\n%s", want, stderr)
		}
	}
	if e := p.exited(dir, "app"); e.ExitCode != 0 || p.logsOf(dir, "app") != "kept data\nkept ext\n" {
		t.Errorf("app: %+v, %q", e, p.logsOf(dir, "app"))
	}
	for _, img := range []string{filepath.Join(state, "_volumes", "mig_data", "disk.img"), filepath.Join(state, "_volumes", "oldext", "disk.img")} {
		if _, err := os.Stat(img); err != nil {
			t.Errorf("not in the store: %v", err)
		}
	}
	if _, stderr, code := p.in(dir, "", "down", "-t", "0"); code != 0 {
		t.Fatalf("down: exit %d, %s", code, stderr)
	}
	if _, stderr, code := p.inWith(dir, compose, "plain", "up", "-d"); code != 0 || strings.Contains(stderr, "Moved") {
		t.Errorf("second up: exit %d, %s", code, stderr)
	}
	p.exited(dir, "app")
}

// TestVolumeKilledWriter: a VM killed (kill -9 of its qemu) while it
// appends to a volume leaves a journal to replay, which a read-only user's
// kernel cannot do; the host replays it before the read-only attach, and
// the reader sees what was written; the disk passes e2fsck -fn.
func TestVolumeKilledWriter(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	wdir, rdir := filepath.Join(p.home, "w"), filepath.Join(p.home, "r")
	p.cleanup(wdir, rdir)
	img := filepath.Join(p.home, "state", "vmcompose", "_volumes", "log", "disk.img")
	writer := `services:
  writer:
    image: ` + ref + `
    command: ["sh", "-c", "i=0; while :; do i=$$((i+1)); echo line$$i >> /d/log; sync; [ $$i = 20 ] && echo wrote20; dd if=/dev/zero of=/d/junk bs=4k count=16 2>/dev/null; done"]
    volumes: ["log:/d"]
volumes:
  log: {name: log, driver_opts: {size: 32m}}
`
	if _, stderr, code := p.in(wdir, writer, "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up writer: exit %d, %s", code, stderr)
	}
	until(t, "the writer to write 20 lines", func() bool { return strings.Contains(p.logsOf(wdir, "writer"), "wrote20") })
	pid := p.ps(wdir)["writer"].Pid
	if pid == 0 {
		t.Fatal("no qemu pid for the writer")
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.exited(wdir, "writer")
	if need, err := vm.NeedsRecovery(img); err != nil || !need {
		t.Fatalf("after kill -9 of the writer's qemu the volume has no journal to replay (%v): the test proves nothing", err)
	}

	reader := `services:
  reader:
    image: ` + ref + `
    command: ["sh", "-c", "grep -c line /d/log; grep -x line20 /d/log"]
    volumes: ["log:/d:ro"]
volumes:
  log: {name: log}
`
	_, stderr, code := p.inWith(rdir, reader, "plain", "up", "-d")
	if code != 0 {
		t.Fatalf("up reader: exit %d, %s", code, stderr)
	}
	if !strings.Contains(stderr, "Replayed the journal of volume log") {
		t.Errorf("up does not say the journal was replayed:\n%s", stderr)
	}
	e, out := p.exited(rdir, "reader"), p.logsOf(rdir, "reader")
	lines := strings.Fields(out)
	if e.ExitCode != 0 || len(lines) != 2 || lines[1] != "line20" {
		t.Errorf("reader: %+v, %q; want the lines written", e, out)
	}
	if out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn: %v\n%s", err, out)
	}
}
