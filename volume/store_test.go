package volume_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/vmcompose/vmcompose/internal/testenv"
	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/volume"
)

func newStore(t *testing.T) *volume.Store {
	t.Helper()
	testenv.LookPath(t, "debugfs", "e2fsprogs")
	s, err := volume.Open(filepath.Join(t.TempDir(), "volumes"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fsck(t *testing.T, path string) {
	t.Helper()
	if out, err := exec.Command("e2fsck", "-fn", path).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn %s: %v\n%s", path, err, out)
	}
}

// entries are the names in dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// TestCreate: a disk volume is <store>/<name>/{volume.json,disk.img}, the
// image a volume disk of the size asked that passes e2fsck -fn; a shared
// one a directory whose data/ is empty; creating a name again returns the
// volume as it is; List and Get see them, Remove leaves nothing.
func TestCreate(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	labels := map[string]string{"com.docker.compose.project": "p"}
	v, created, err := s.Create(ctx, "p_data", volume.Spec{Kind: volume.Disk, Size: 32 << 20, Labels: labels, Options: map[string]string{"size": "32m"}})
	if err != nil || !created {
		t.Fatalf("Create: %v, created %v", err, created)
	}
	if got := strings.Join(entries(t, v.Dir), " "); got != "disk.img volume.json" {
		t.Errorf("the volume's directory holds %s", got)
	}
	if v.Mountpoint() != filepath.Join(s.Dir(), "p_data", "disk.img") {
		t.Errorf("Mountpoint %s", v.Mountpoint())
	}
	if fi, err := os.Stat(v.Mountpoint()); err != nil || fi.Size() != 32<<20 {
		t.Fatalf("disk image: %v %v", fi, err)
	}
	if d, err := vm.VolumeDataDir(v.Mountpoint()); err != nil || d != vm.VolumeData {
		t.Errorf("VolumeDataDir = %q, %v: not a volume disk", d, err)
	}
	fsck(t, v.Mountpoint())
	var info map[string]any
	b, _ := os.ReadFile(filepath.Join(v.Dir, "volume.json"))
	if err := json.Unmarshal(b, &info); err != nil || info["name"] != "p_data" || info["kind"] != "disk" || info["created"] == nil ||
		info["labels"].(map[string]any)["com.docker.compose.project"] != "p" || info["driver_opts"].(map[string]any)["size"] != "32m" {
		t.Errorf("volume.json: %v\n%s", err, b)
	}

	again, created, err := s.Create(ctx, "p_data", volume.Spec{Kind: volume.Shared})
	if err != nil || created || again.Kind != volume.Disk || again.CreatedAt != v.CreatedAt {
		t.Errorf("Create of an existing volume: %+v, created %v, %v", again, created, err)
	}
	sh, _, err := s.Create(ctx, "shared1", volume.Spec{Kind: volume.Shared})
	if err != nil {
		t.Fatal(err)
	}
	if got := entries(t, filepath.Join(sh.Mountpoint(), "data")); len(got) != 0 {
		t.Errorf("a new shared volume's data holds %v", got)
	}
	list, err := s.List()
	if err != nil || len(list) != 2 || list[0].Name != "p_data" || list[1].Name != "shared1" || list[1].Kind != volume.Shared {
		t.Errorf("List: %+v, %v", list, err)
	}
	if got := volume.Labelled(list, "com.docker.compose.project", "p"); len(got) != 1 || got[0].Name != "p_data" {
		t.Errorf("Labelled: %+v", got)
	}
	for _, name := range []string{"p_data", "shared1"} {
		if err := s.Remove(name); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(name); !errors.Is(err, volume.ErrNotFound) {
			t.Errorf("Get after Remove: %v", err)
		}
	}
	if left := entries(t, s.Dir()); len(left) != 0 {
		t.Errorf("the store holds %v after removing everything", left)
	}
	for _, bad := range []string{"", "x", "../x", ".hidden", "a/b", "-a"} {
		if _, _, err := s.Create(ctx, bad, volume.Spec{Kind: volume.Disk}); err == nil {
			t.Errorf("Create(%q): no error", bad)
		}
	}
}

// TestConcurrentCreate: processes creating one volume at once end with one
// volume, made by one of them, and nothing half made beside it.
func TestConcurrentCreate(t *testing.T) {
	s := newStore(t)
	var wg sync.WaitGroup
	var mu sync.Mutex
	made, created := map[string]bool{}, 0
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, c, err := s.Create(context.Background(), "vol", volume.Spec{Kind: volume.Disk, Size: 16 << 20})
			if err != nil {
				t.Error(err)
				return
			}
			fi, err := os.Stat(v.Mountpoint())
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			made[v.CreatedAt.String()+"/"+fi.ModTime().String()] = true
			if c {
				created++
			}
		}()
	}
	wg.Wait()
	if created != 1 || len(made) != 1 {
		t.Errorf("4 concurrent Creates: %d say they created it, %d volumes seen", created, len(made))
	}
	if got := strings.Join(entries(t, s.Dir()), " "); got != "vol" {
		t.Errorf("the store holds %s", got)
	}
	fsck(t, filepath.Join(s.Dir(), "vol", "disk.img"))
}

// TestAdopt: an image of an earlier version is moved (not copied) into
// the store with its data; adopting a name that exists leaves the old
// image where it was; an image on another file system is refused and
// stays.
func TestAdopt(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	old := filepath.Join(filepath.Dir(s.Dir()), "project", "volumes", "data.img")
	os.MkdirAll(filepath.Dir(old), 0o755)
	if err := vm.CreateScratch(ctx, old, 16<<20); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(old)
	v, moved, err := s.Adopt("project_data", old, map[string]string{"com.docker.compose.project": "project"})
	if err != nil || !moved {
		t.Fatalf("Adopt: %v, moved %v", err, moved)
	}
	after, err := os.Stat(v.Mountpoint())
	if err != nil || !os.SameFile(before, after) {
		t.Errorf("the image was not moved: %v", err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("the old image is still there: %v", err)
	}
	if got, err := s.Get("project_data"); err != nil || got.Kind != volume.Disk || got.Labels["com.docker.compose.project"] != "project" {
		t.Errorf("Get: %+v %v", got, err)
	}
	fsck(t, v.Mountpoint())

	// A second image for the same name stays where it is.
	if err := vm.CreateScratch(ctx, old, 16<<20); err != nil {
		t.Fatal(err)
	}
	if _, moved, err := s.Adopt("project_data", old, nil); err != nil || moved {
		t.Errorf("Adopt of an existing name: moved %v, %v", moved, err)
	}
	if _, err := os.Stat(old); err != nil {
		t.Errorf("Adopt of an existing name took the image: %v", err)
	}

	other := otherFS(t, s.Dir())
	img := filepath.Join(other, "x.img")
	if err := vm.CreateScratch(ctx, img, 16<<20); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Adopt("x_data", img, nil); err == nil || !strings.Contains(err.Error(), "another file system") {
		t.Errorf("Adopt across file systems: %v", err)
	}
	if _, err := os.Stat(img); err != nil {
		t.Errorf("a refused Adopt lost the image: %v", err)
	}
	if got := strings.Join(entries(t, s.Dir()), " "); got != "project_data" {
		t.Errorf("the store holds %s", got)
	}
}

// otherFS returns a directory on another file system than dir's
// (/dev/shm), or skips.
func otherFS(t *testing.T, dir string) string {
	var a, b syscall.Stat_t
	if syscall.Stat(dir, &a) != nil || syscall.Stat("/dev/shm", &b) != nil || a.Dev == b.Dev {
		t.Skip("no other file system than the test's at /dev/shm")
	}
	d, err := os.MkdirTemp("/dev/shm", "volume-test-")
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func TestNameOf(t *testing.T) {
	s, err := volume.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]string{
		filepath.Join(s.Dir(), "p_data", "disk.img"):             "p_data",
		filepath.Join(s.Dir(), "sh", "shared"):                   "sh",
		filepath.Join(s.Dir(), "sh", "shared", "data"):           "sh",
		filepath.Join(s.Dir(), "p_data", "volume.json"):          "",
		filepath.Join(s.Dir(), ".p_data.new-1", "disk.img"):      "",
		filepath.Join(s.Dir(), "..", "p", "volumes", "data.img"): "",
		s.Dir(): "",
	} {
		if got, ok := s.NameOf(path); got != want || ok != (want != "") {
			t.Errorf("NameOf(%s) = %q, %v; want %q", path, got, ok, want)
		}
	}
}

func TestParseOptions(t *testing.T) {
	o, err := volume.ParseOptions(map[string]string{"size": "10g", "sharing": "shared"})
	if err != nil || o.Size != 10<<30 || o.Sharing != volume.SharingShared || o.Kind() != volume.Shared {
		t.Errorf("ParseOptions: %+v, %v", o, err)
	}
	if o, err := volume.ParseOptions(nil); err != nil || o.Sharing != volume.SharingAuto || o.Kind() != volume.Disk || o.Size != 0 {
		t.Errorf("ParseOptions(nil): %+v, %v", o, err)
	}
	for opts, want := range map[string]string{
		"type":    "driver_opts.type is not supported: the options are size and sharing",
		"size":    `driver_opts.size "tiny": want a size such as 10g`,
		"sharing": `driver_opts.sharing "many": want auto, shared or disk`,
	} {
		in := map[string]string{"type": "nfs", "size": "tiny", "sharing": "many"}
		if _, err := volume.ParseOptions(map[string]string{opts: in[opts]}); err == nil || err.Error() != want {
			t.Errorf("ParseOptions(%s=%s): %v, want %s", opts, in[opts], err, want)
		}
	}
}
