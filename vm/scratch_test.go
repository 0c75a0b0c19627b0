package vm_test

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmcompose/vmcompose/vm"
)

// TestCreateVolume: a volume disk's root holds lost+found and an empty
// data directory owned by root, passes e2fsck -fn, and e2fsck -fy has
// nothing to change; VolumeDataDir tells it from a disk whose data is at
// its root (a scratch disk, a volume of an earlier version).
func TestCreateVolume(t *testing.T) {
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skipf("e2fsprogs: %v", err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	vol, old := filepath.Join(dir, "vol.img"), filepath.Join(dir, "old.img")
	if err := vm.CreateVolume(ctx, vol, 16<<20); err != nil {
		t.Fatal(err)
	}
	if err := vm.CreateScratch(ctx, old, 16<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("debugfs", "-R", "ls -l /", vol).Output()
	if err != nil {
		t.Fatal(err)
	}
	var root []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(l)
		if len(f) >= 9 && f[8] != "." && f[8] != ".." {
			root = append(root, f[8]+" "+f[1]+" "+f[3]+":"+f[4]) // inode, mode, (type), uid, gid, size, date, time, name
		}
	}
	if got := strings.Join(root, ", "); got != "lost+found 40700 0:0, data 40755 0:0" {
		t.Errorf("volume root: %s", got)
	}
	if out, err := exec.Command("debugfs", "-R", "ls /data", vol).Output(); err != nil || len(strings.Fields(string(out))) != 6 {
		t.Errorf("data holds more than . and ..: %s %v", out, err)
	}
	for _, args := range [][]string{{"-fn"}, {"-fy"}} {
		if out, err := exec.Command("e2fsck", append(args, vol)...).CombinedOutput(); err != nil {
			t.Errorf("e2fsck %s: %v\n%s", args[0], err, out)
		}
	}
	for path, want := range map[string]string{vol: vm.VolumeData, old: ""} {
		if got, err := vm.VolumeDataDir(path); err != nil || got != want {
			t.Errorf("VolumeDataDir(%s) = %q, %v; want %q", filepath.Base(path), got, err, want)
		}
	}
	if _, err := vm.VolumeDataDir(filepath.Join(dir, "missing.img")); err == nil {
		t.Error("VolumeDataDir of a missing file: no error")
	}
}
