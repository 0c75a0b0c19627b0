package ext4

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testenv"
)

// fsck runs e2fsck -fn on img and fails the test unless it exits 0.
func fsck(t *testing.T, img string) {
	t.Helper()
	testenv.LookPath(t, "e2fsck", "apt-get install e2fsprogs")
	out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", img, err, out)
	}
}

func debugfs(t *testing.T, img, req string) string {
	t.Helper()
	out, err := exec.Command("debugfs", "-R", req, img).CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v\n%s", req, err, out)
	}
	return string(out)
}

func writeImage(t *testing.T, build func(w *Writer) *Inode) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fs.ext4")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := NewWriter(f, 64<<30)
	if err != nil {
		t.Fatal(err)
	}
	root := build(w)
	size, err := w.Finish(root)
	if err != nil {
		t.Fatal(err)
	}
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != size {
		t.Fatalf("image file is %d bytes, Finish said %d", st.Size(), size)
	}
	if keep := os.Getenv("EXT4_KEEP"); keep != "" {
		_ = os.Link(img, keep) // for looking at by hand
	}
	return img
}

func TestWriterFormats(t *testing.T) {
	mt := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)
	img := writeImage(t, func(w *Writer) *Inode {
		data := func(b []byte) *Data {
			d, err := w.WriteData(bytes.NewReader(b), int64(len(b)))
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
		big := bytes.Repeat([]byte("0123456789abcdef"), 200000) // 3.2 MB
		// Many fragments force an extent tree of depth 1.
		var frag []byte
		for i := range 3000 {
			blk := make([]byte, BlockSize)
			if i%2 == 0 {
				blk[7] = byte(i)
			}
			frag = append(frag, blk...)
		}
		file := &Inode{Mode: ModeReg | 0o4755, UID: 70000, GID: 70001, Mtime: mt, Data: data([]byte("hello\n")),
			Xattrs: map[string][]byte{"security.capability": {1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, "user.a": []byte("b")}}
		bigx := map[string][]byte{}
		for i := range 30 {
			bigx["user.attribute-number-"+strings.Repeat("x", i)] = bytes.Repeat([]byte{byte(i)}, 50)
		}
		sub := &Inode{Mode: ModeDir | 0o1777, Mtime: mt, Entries: map[string]*Inode{}}
		for i := range 300 {
			sub.Entries[strings.Repeat("n", 200)+string(rune('a'+i%26))+strings.Repeat("z", i/26)] = &Inode{Mode: ModeReg | 0o644}
		}
		return &Inode{Mode: ModeDir | 0o755, Mtime: mt, Entries: map[string]*Inode{
			"file":   file,
			"hard":   file,
			"big":    {Mode: ModeReg | 0o600, Data: data(big)},
			"frag":   {Mode: ModeReg | 0o600, Data: data(frag)},
			"empty":  {Mode: ModeReg | 0o600, Data: data(nil)},
			"sym":    {Mode: ModeLink | 0o777, Symlink: "file"},
			"lsym":   {Mode: ModeLink | 0o777, Symlink: strings.Repeat("long/", 40)},
			"null":   {Mode: ModeChar | 0o666, Devmajor: 1, Devminor: 3},
			"bigdev": {Mode: ModeBlock | 0o660, Devmajor: 259, Devminor: 70000},
			"fifo":   {Mode: ModeFIFO | 0o600},
			"sock":   {Mode: ModeSocket | 0o600},
			"xattrs": {Mode: ModeReg | 0o644, Xattrs: bigx},
			"sub":    sub,
		}}
	})
	fsck(t, img)
	out := debugfs(t, img, "stat /file")
	for _, want := range []string{"Mode:  04755", "User: 70000", "Group: 70001", "Links: 2", "Size: 6", "capability"} {
		if !strings.Contains(out, want) {
			t.Errorf("stat /file lacks %q:\n%s", want, out)
		}
	}
	out = debugfs(t, img, "stat /bigdev")
	if !strings.Contains(out, "Device major/minor number: 259:70000") {
		t.Errorf("stat /bigdev:\n%s", out)
	}
}

func TestWriterManyGroups(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files int
		bytes int64
	}{
		{"blocks", 2, 150 << 20}, // 300 MB: three groups, extents over 128 MiB split
		{"inodes", 40000, 0},     // more inodes than one group can hold
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := writeImage(t, func(w *Writer) *Inode {
				root := &Inode{Mode: ModeDir | 0o755, Entries: map[string]*Inode{}}
				for i := range tc.files {
					d, err := w.WriteData(&pattern{n: tc.bytes, seed: byte(i)}, tc.bytes)
					if err != nil {
						t.Fatal(err)
					}
					root.Entries[fmt.Sprintf("f%05d", i)] = &Inode{Mode: ModeReg | 0o644, Data: d}
				}
				return root
			})
			fsck(t, img)
			mountAndCheck(t, img, tc.files, tc.bytes)
		})
	}
}

// mountAndCheck loop-mounts img (when this machine allows it) and checks
// that Linux sees the files with their content.
func mountAndCheck(t *testing.T, img string, files int, size int64) {
	t.Helper()
	if os.Geteuid() != 0 || runtime.GOOS != "linux" {
		return
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop,ro", img, dir).CombinedOutput(); err != nil {
		t.Logf("not checking with the kernel: mount: %v: %s", err, out)
		return
	}
	defer func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount: %v: %s", err, out)
		}
	}()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != files+1 { // and lost+found
		t.Fatalf("kernel sees %d entries, want %d", len(ents), files+1)
	}
	last := fmt.Sprintf("f%05d", files-1)
	got, err := os.ReadFile(filepath.Join(dir, last))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := io.ReadAll(&pattern{n: size, seed: byte(files - 1)})
	if !bytes.Equal(got, want) {
		t.Fatalf("kernel reads %d bytes of %s that differ from what was written", len(got), last)
	}
}

// pattern yields n non-zero bytes that depend on their offset.
type pattern struct {
	n    int64
	seed byte
	off  int64
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.n == 0 {
		return 0, io.EOF
	}
	b = b[:min(int64(len(b)), p.n)]
	for i := range b {
		o := p.off + int64(i)
		b[i] = (p.seed + byte(o) + byte(o>>12)) | 1
	}
	p.n -= int64(len(b))
	p.off += int64(len(b))
	return len(b), nil
}
