package rootfs

import (
	"archive/tar"
	"context"
	"path/filepath"
	"testing"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

// FuzzBuild feeds arbitrary bytes as two layers' tar streams. Build may
// refuse them, but must not panic, and what it builds must pass e2fsck.
func FuzzBuild(f *testing.F) {
	f.Add(testimage.Tar(f, []testimage.Entry{
		testimage.Dir("a", 0o755), testimage.File("a/f", 0o644, "x"), testimage.Symlink("s", "../../a"),
		testimage.File("s/g", 0o4755, "y"), testimage.Hardlink("h", "a/f"),
	}), testimage.Tar(f, []testimage.Entry{
		testimage.Whiteout("../a/f"), testimage.Opaque("s"), testimage.Fifo("p", 0o600),
		testimage.Device("d", tar.TypeChar, 0o600, 300, 70000), testimage.Symlink("a", "/"),
		testimage.File("a/a/a/x", 0o644, "z"),
	}))
	f.Add([]byte{}, []byte("not a tar"))
	f.Fuzz(func(t *testing.T, lower, upper []byte) {
		img := testimage.FromTars(t, lower, upper)
		dst := filepath.Join(t.TempDir(), "rootfs.ext4")
		if err := Build(context.Background(), img, dst, WithMaxSize(64<<20)); err != nil {
			return
		}
		fsck(t, dst)
	})
}
