package vm_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/vm"
)

// tree describes every entry under dir: its path, type and mode bits,
// owner, size, link target and (for files and directories) mtime.
func tree(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	filepath.Walk(dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(dir, path)
		st := fi.Sys().(*syscall.Stat_t)
		line := fmt.Sprintf("%s %o %d:%d", rel, st.Mode, st.Uid, st.Gid)
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, _ := os.Readlink(path)
			line += " -> " + target
		case fi.Mode().IsRegular():
			b, _ := os.ReadFile(path)
			line += fmt.Sprintf(" %q %s", b, fi.ModTime().UTC().Format(time.DateTime))
		case rel != ".":
			line += " " + fi.ModTime().UTC().Format(time.DateTime)
		}
		lines = append(lines, line)
		return nil
	})
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// TestExtractVolume: the data of a volume disk, and the root of a disk
// without the volume label, come out with their owners, modes (setuid,
// setgid and sticky included), times and symlinks, the disk unchanged;
// lost+found and a fifo are left out; an existing destination is refused.
func TestExtractVolume(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("keeping owners needs root")
	}
	for _, p := range []string{"debugfs", "e2fsck", "mkfs.ext4"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("e2fsprogs: %v", err)
		}
	}
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	when := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	make := func(root string) {
		must(os.MkdirAll(filepath.Join(root, "sub", "deep"), 0o755))
		must(os.WriteFile(filepath.Join(root, "f"), []byte("hello\n"), 0o640))
		must(os.Chown(filepath.Join(root, "f"), 1000, 1001))
		must(os.WriteFile(filepath.Join(root, "sub", "deep", "su"), []byte("x"), 0o755))
		must(os.Chmod(filepath.Join(root, "sub", "deep", "su"), 0o755|os.ModeSetuid))
		must(os.Chmod(filepath.Join(root, "sub"), 0o777|os.ModeSticky))
		must(os.Chown(filepath.Join(root, "sub"), 33, 33))
		must(os.Chmod(filepath.Join(root, "sub", "deep"), 0o775|os.ModeSetgid))
		must(os.Symlink("../f", filepath.Join(root, "sub", "link")))
		must(os.Lchown(filepath.Join(root, "sub", "link"), 7, 8))
		must(os.WriteFile(filepath.Join(root, `we"ird name`), nil, 0o600))
		must(syscall.Mkfifo(filepath.Join(root, "fifo"), 0o644))
		for _, p := range []string{"f", "sub/deep/su", "sub/deep", "sub", `we"ird name`} {
			must(os.Chtimes(filepath.Join(root, p), when, when))
		}
	}
	want := func(root string) string {
		os.Remove(filepath.Join(root, "fifo"))
		return tree(t, root)
	}

	// A volume disk: its data directory.
	data := filepath.Join(src, vm.VolumeData)
	make(data)
	must(os.Chmod(data, 0o750))
	must(os.Chown(data, 70, 70))
	vol := filepath.Join(dir, "vol.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-d", src, "-L", vm.VolumeLabel, vol, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	before, _ := os.ReadFile(vol)
	dst := filepath.Join(dir, "vol")
	must(vm.ExtractVolume(ctx, vol, dst))
	if got, w := tree(t, dst), want(data); got != w {
		t.Errorf("extracted volume:\n%s\nwant:\n%s", got, w)
	}
	if after, _ := os.ReadFile(vol); string(after) != string(before) {
		t.Error("ExtractVolume changed the disk")
	}
	if err := vm.ExtractVolume(ctx, vol, dst); err == nil {
		t.Error("extracting onto an existing directory: no error")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".vol.extract-*")); len(left) > 0 {
		t.Errorf("left behind: %v", left)
	}

	// A disk whose data is its root: all of it but lost+found.
	flat := filepath.Join(dir, "flat")
	make(flat)
	old := filepath.Join(dir, "old.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-d", flat, old, "32M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	dst = filepath.Join(dir, "old")
	must(vm.ExtractVolume(ctx, old, dst))
	if got, w := tree(t, dst), want(flat); got != w {
		t.Errorf("extracted root:\n%s\nwant:\n%s", got, w)
	}
}
