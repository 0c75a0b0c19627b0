package rootfs

import (
	"archive/tar"
	"bytes"
	"encoding/binary"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

// mountImage loop-mounts img read-only with the host kernel, or skips the
// test when this machine cannot (not root, no loop devices).
func mountImage(t *testing.T, img string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-o", "loop,ro", img, dir).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount here: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// readMounted reads the tree as Linux's ext4 driver presents it.
func readMounted(t *testing.T, root string, maxHash int64) map[string]*fsFile {
	t.Helper()
	files := map[string]*fsFile{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel := "/" + strings.TrimPrefix(strings.TrimPrefix(p, root), "/")
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		f := &fsFile{
			perm: int64(st.Mode & 0o7777), uid: int(st.Uid), gid: int(st.Gid), ino: st.Ino,
			mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			f.typ, f.size = tar.TypeReg, st.Size
			if st.Size <= maxHash {
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				f.sha = sha(b)
			}
		case syscall.S_IFDIR:
			f.typ = tar.TypeDir
		case syscall.S_IFLNK:
			f.typ, f.size = tar.TypeSymlink, st.Size
			if f.target, err = os.Readlink(p); err != nil {
				return err
			}
		case syscall.S_IFCHR, syscall.S_IFBLK:
			f.typ = tar.TypeChar
			if st.Mode&syscall.S_IFMT == syscall.S_IFBLK {
				f.typ = tar.TypeBlock
			}
			f.major = int64((st.Rdev>>8)&0xfff | (st.Rdev>>32)&^0xfff)
			f.minor = int64(st.Rdev&0xff | (st.Rdev>>12)&^0xff)
		case syscall.S_IFIFO:
			f.typ = tar.TypeFifo
		}
		if f.typ == tar.TypeReg || f.typ == tar.TypeDir {
			f.xattrs = listXattrs(t, p)
		}
		files[rel] = f
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

func listXattrs(t *testing.T, p string) map[string]string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := syscall.Listxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	var out map[string]string
	for _, name := range strings.Split(string(buf[:n]), "\x00") {
		if name == "" {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := syscall.Getxattr(p, name, v)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		if out == nil {
			out = map[string]string{}
		}
		out[name] = string(normalizeACL(name, v[:m]))
	}
	return out
}

// normalizeACL zeroes the ids of ACL entries that have none (owner, group,
// mask, other): the kernel reports them as -1, debugfs as 0.
func normalizeACL(name string, v []byte) []byte {
	if !strings.HasPrefix(name, "system.posix_acl_") || len(v) < 4 {
		return v
	}
	v = bytes.Clone(v)
	for e := v[4:]; len(e) >= 8; e = e[8:] {
		if tag := binary.LittleEndian.Uint16(e); tag != 0x02 && tag != 0x08 {
			binary.LittleEndian.PutUint32(e[4:], 0)
		}
	}
	return v
}

// TestKernelReadsImage checks what Linux itself sees in built images: the
// same tree as the model, with the kernel as the independent reader.
func TestKernelReadsImage(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loop-mounting needs root")
	}
	for name, img := range map[string]func(*testing.T) v1.Image{
		"layered": func(t *testing.T) v1.Image { return testimage.Layered(t) },
		"edge":    edgeCaseImage,
		"tiny": func(t *testing.T) v1.Image {
			return testimage.Image(t, []testimage.Entry{testimage.File("only", 0o644, "x")})
		},
		"bench": func(t *testing.T) v1.Image { img, _ := benchImage(t); return img },
	} {
		t.Run(name, func(t *testing.T) {
			img := img(t)
			dst := build(t, img)
			got := readMounted(t, mountImage(t, dst), maxHash)
			want := flattenModel(t, layerTars(t, img), maxHash)
			// The kernel lists xattrs of symlinks only with llistxattr;
			// compare those without them.
			for _, f := range want {
				if f.typ != tar.TypeReg && f.typ != tar.TypeDir {
					f.xattrs = nil
				}
				for k, v := range f.xattrs {
					f.xattrs[k] = string(normalizeACL(k, []byte(v)))
				}
			}
			compareTrees(t, want, got)
		})
	}
}
