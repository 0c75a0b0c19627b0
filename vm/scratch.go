package vm

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// CreateScratch makes path a sparse raw disk of size bytes holding an empty
// ext4 file system labelled "scratch", for a VM's writable layer. It needs
// mkfs.ext4 (e2fsprogs) on the host. The inode tables and journal are
// initialised now, so that the guest's kernel does not spend its CPU on it.
// path must not exist; on error nothing is left behind.
func CreateScratch(ctx context.Context, path string, size int64) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("scratch disk: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(path)
		}
	}()
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("scratch disk %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("scratch disk %s: %w", path, err)
	}
	mkfs, err := exec.LookPath("mkfs.ext4")
	if err != nil {
		for _, p := range []string{"/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4", "/opt/homebrew/opt/e2fsprogs/sbin/mkfs.ext4", "/usr/local/opt/e2fsprogs/sbin/mkfs.ext4"} {
			if _, serr := os.Stat(p); serr == nil {
				mkfs, err = p, nil
				break
			}
		}
		if err != nil {
			return fmt.Errorf("scratch disk %s: mkfs.ext4 (install e2fsprogs): %w", path, err)
		}
	}
	cmd := exec.CommandContext(ctx, mkfs, "-F", "-q", "-m", "0", "-L", "scratch",
		"-E", "lazy_itable_init=0,lazy_journal_init=0", path)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("scratch disk %s: mkfs.ext4: %w: %s", path, err, strings.TrimSpace(out.String()))
	}
	return nil
}
