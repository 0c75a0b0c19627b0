package rootfs

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vmcompose/vmcompose/internal/atomicfile"
	"github.com/vmcompose/vmcompose/internal/flock"
)

// Path returns where Ensure keeps the rootfs image of the image with the
// given digest hex in cacheDir.
func Path(cacheDir, digestHex string) string {
	return filepath.Join(cacheDir, digestHex+".ext4")
}

// Ensure returns the path of img's rootfs image in cacheDir, building it
// with Build when it is not there yet (built reports whether this call
// built it). The image is <cacheDir>/<image-digest-hex>.ext4, shared by all
// callers and never modified once present.
//
// Concurrent callers, in this process or others, build an image at most
// once: they serialize on an flock of <path>.lock and check again after
// taking it. A call that waits for the lock stops when ctx is cancelled.
// Ensure refuses a cache entry that is not a regular file, and removes the
// temporary file of a build that died (the lock file stays).
func Ensure(ctx context.Context, img v1.Image, cacheDir string, opts ...Option) (path string, built bool, err error) {
	if _, err := makeOptions(opts); err != nil {
		return "", false, err
	}
	digest, err := img.Digest()
	if err != nil {
		return "", false, fmt.Errorf("image digest: %w", err)
	}
	path = Path(cacheDir, digest.Hex)
	if ok, err := present(path); ok || err != nil {
		return path, false, err
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", false, fmt.Errorf("rootfs cache: %w", err)
	}
	unlock, err := flock.Lock(ctx, path+".lock", false)
	if err != nil {
		return "", false, fmt.Errorf("locking rootfs cache entry %s: %w", digest.Hex, err)
	}
	defer unlock()
	if ok, err := present(path); ok || err != nil {
		return path, false, err
	}
	// Holding the lock, no one else is building this image: temp files
	// left for it are from a builder that died.
	if stale, err := filepath.Glob(filepath.Join(cacheDir, atomicfile.TempPrefix+filepath.Base(path)+"-*")); err == nil {
		for _, f := range stale {
			os.Remove(f)
		}
	}
	if err := Build(ctx, img, path, opts...); err != nil {
		return "", false, fmt.Errorf("building rootfs of %s: %w", digest, err)
	}
	return path, true, nil
}

func present(path string) (bool, error) {
	st, err := os.Lstat(path)
	switch {
	case os.IsNotExist(err):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("rootfs cache: %w", err)
	case !st.Mode().IsRegular():
		return false, fmt.Errorf("rootfs cache entry %s: not a regular file (%s)", path, st.Mode().Type())
	}
	return true, nil
}
