package volume_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/volume"
)

// sampleTree makes in dir what a volume's data may hold: files of other
// owners and modes, old times, symlinks (one dangling, one owned by
// another user), a hard link, a FIFO, a socket, setgid and sticky
// directories, a sparse file, a name with a space and a quote.
func sampleTree(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	old := time.Date(2020, 1, 2, 3, 4, 5, 0, time.UTC)
	must(os.MkdirAll(filepath.Join(dir, "sub", "deeper"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "f"), []byte("hello\n"), 0o640))
	must(os.Chown(filepath.Join(dir, "f"), 1234, 5678))
	must(os.Link(filepath.Join(dir, "f"), filepath.Join(dir, "sub", "hard")))
	must(os.Symlink("f", filepath.Join(dir, "link")))
	must(os.Lchown(filepath.Join(dir, "link"), 7, 8))
	must(os.Symlink("/nonexistent", filepath.Join(dir, "sub", "dangling")))
	must(syscall.Mkfifo(filepath.Join(dir, "sub", "fifo"), 0o620))
	must(syscall.Mknod(filepath.Join(dir, "sock"), syscall.S_IFSOCK|0o755, 0))
	must(os.WriteFile(filepath.Join(dir, `a "q" b`), []byte("odd name\n"), 0o644))
	f, err := os.Create(filepath.Join(dir, "sub", "deeper", "sparse"))
	must(err)
	must(f.Truncate(1 << 20))
	f.Close()
	must(os.Chmod(filepath.Join(dir, "sub"), 0o2775|fs.ModeSetgid|fs.ModeSticky))
	must(os.Chown(filepath.Join(dir, "sub", "deeper"), 42, 43))
	for _, p := range []string{"f", "sub/deeper/sparse", "sub/deeper", "sub", "."} {
		must(os.Chtimes(filepath.Join(dir, p), old, old))
	}
}

// describe lists the tree at dir, a line a name: type and mode, owner,
// modification time (of files and directories), symlink target,
// hard link group, content.
func describe(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	inodes := map[uint64]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		rel, _ := filepath.Rel(dir, path)
		line := fmt.Sprintf("%s %v %d:%d", rel, fi.Mode(), st.Uid, st.Gid)
		if fi.Mode().IsRegular() || fi.IsDir() {
			line += " " + fi.ModTime().UTC().Format(time.DateTime)
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, _ := os.Readlink(path)
			line += " -> " + target
		case fi.Mode().IsRegular():
			if first, ok := inodes[st.Ino]; ok {
				line += " = " + first
			} else {
				inodes[st.Ino] = rel
				b, _ := os.ReadFile(path)
				line += fmt.Sprintf(" %d bytes %q", len(b), strings.TrimRight(string(b[:min(len(b), 16)]), "\x00"))
			}
		}
		lines = append(lines, line)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestMakeShared: a disk volume's data is copied out of its image with
// what makes the files what they are (see MakeShared), the volume is
// shared from then on and its image is gone; for a volume of an earlier
// version, whose data is the image's root, lost+found stays behind.
func TestMakeShared(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("MakeShared needs root")
	}
	ctx := context.Background()
	for _, layout := range []struct{ name, label, under string }{{"new", "vmcompose-vol", "data"}, {"old", "scratch", ""}} {
		t.Run(layout.name, func(t *testing.T) {
			s := newStore(t)
			src := filepath.Join(t.TempDir(), "src")
			sampleTree(t, filepath.Join(src, layout.under))
			want := describe(t, filepath.Join(src, layout.under))
			img := filepath.Join(t.TempDir(), "vol.img")
			if out, err := exec.Command("mkfs.ext4", "-q", "-L", layout.label, "-d", src, img, "32M").CombinedOutput(); err != nil {
				t.Fatalf("mkfs.ext4: %v %s", err, out)
			}
			if _, _, err := s.Adopt("vol", img, nil); err != nil {
				t.Fatal(err)
			}
			moved, err := s.MakeShared(ctx, "vol")
			if err != nil || !moved {
				t.Fatalf("MakeShared: %v, moved %v", err, moved)
			}
			v, err := s.Get("vol")
			if err != nil || v.Kind != volume.Shared {
				t.Fatalf("after MakeShared: %+v, %v", v, err)
			}
			if got := describe(t, filepath.Join(v.Mountpoint(), "data")); got != want {
				t.Errorf("the copy:\n%s\nwant:\n%s", got, want)
			}
			if got := strings.Join(entries(t, v.Dir), " "); got != "shared volume.json" {
				t.Errorf("the volume's directory holds %s", got)
			}
			if moved, err := s.MakeShared(ctx, "vol"); moved || err != nil {
				t.Errorf("MakeShared of a shared volume: %v, %v", moved, err)
			}
		})
	}
}

// TestMakeSharedRefuses: an image with a device node stays a disk volume,
// its image untouched and no half copy left.
func TestMakeSharedRefuses(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("MakeShared needs root")
	}
	s := newStore(t)
	src := filepath.Join(t.TempDir(), "src")
	os.MkdirAll(filepath.Join(src, "data"), 0o755)
	if err := syscall.Mknod(filepath.Join(src, "data", "null"), syscall.S_IFCHR|0o666, 1<<8|3); err != nil {
		t.Fatal(err)
	}
	img := filepath.Join(t.TempDir(), "vol.img")
	if out, err := exec.Command("mkfs.ext4", "-q", "-L", "vmcompose-vol", "-d", src, img, "16M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v %s", err, out)
	}
	if _, _, err := s.Adopt("vol", img, nil); err != nil {
		t.Fatal(err)
	}
	if moved, err := s.MakeShared(context.Background(), "vol"); moved || err == nil || !strings.Contains(err.Error(), "null is a device node") {
		t.Errorf("MakeShared of an image with a device node: %v, %v", moved, err)
	}
	v, err := s.Get("vol")
	if err != nil || v.Kind != volume.Disk {
		t.Fatalf("%+v, %v", v, err)
	}
	if got := strings.Join(entries(t, v.Dir), " "); got != "disk.img volume.json" {
		t.Errorf("the volume's directory holds %s", got)
	}
}
