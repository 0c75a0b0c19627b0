package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// CreateScratch makes path a sparse raw disk of size bytes holding an empty
// ext4 file system labelled "scratch", for a VM's writable layer. It needs
// mkfs.ext4 (e2fsprogs) on the host. The inode tables and journal are
// initialised now, so that the guest's kernel does not spend its CPU on it.
// path must not exist; on error nothing is left behind.
func CreateScratch(ctx context.Context, path string, size int64) error {
	return createExt4(ctx, path, size, "scratch", nil)
}

// VolumeLabel labels the ext4 file systems CreateVolume makes: their
// data is in the directory VolumeData, not at their root.
const VolumeLabel = "vmcompose-vol"

// VolumeData is the directory of a volume disk's root that holds the
// volume's data, and is what the guest mounts. The root also holds
// lost+found, which ext4 wants (e2fsck -p and -y create it again when it
// is missing) and which must not show in a new volume: programs such as
// initdb refuse a data directory that is not empty.
const VolumeData = "data"

// CreateVolume makes path a sparse raw disk of size bytes for a volume:
// an empty ext4 file system labelled VolumeLabel whose root holds
// lost+found and the empty directory VolumeData (owned by root, mode
// 0755, as docker makes a volume's _data). It needs mkfs.ext4 and debugfs
// (e2fsprogs). path must not exist; on error nothing is left behind.
func CreateVolume(ctx context.Context, path string, size int64) error {
	return createExt4(ctx, path, size, VolumeLabel, []string{VolumeData})
}

// VolumeDataDir returns the directory of the volume disk at path that
// holds the volume's data: VolumeData for the disks CreateVolume makes,
// "" (the root) for any other ext4 image, such as the volumes earlier
// versions made or an external volume made by hand.
func VolumeDataDir(path string) (string, error) {
	sb, err := superblock(path)
	if err != nil {
		return "", err
	}
	// The label: 16 bytes, NUL-padded, at 0x78.
	if string(bytes.TrimRight(sb[0x78:0x88], "\x00")) == VolumeLabel {
		return VolumeData, nil
	}
	return "", nil
}

// createExt4 makes path a sparse raw disk holding an empty ext4 file
// system labelled label, in whose root debugfs then makes the
// directories dirs.
func createExt4(ctx context.Context, path string, size int64, label string, dirs []string) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("disk: %w", err)
	}
	defer func() {
		if err != nil {
			os.Remove(path)
		}
	}()
	if err := f.Truncate(size); err != nil {
		f.Close()
		return fmt.Errorf("disk %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("disk %s: %w", path, err)
	}
	if _, err := e2fsprogs(ctx, "mkfs.ext4", "-F", "-q", "-m", "0", "-L", label,
		"-E", "lazy_itable_init=0,lazy_journal_init=0", path); err != nil {
		return fmt.Errorf("disk %s: %w", path, err)
	}
	for _, dir := range dirs {
		// debugfs exits 0 whatever happens; it says what failed after
		// its version line.
		out, err := e2fsprogs(ctx, "debugfs", "-w", "-R", "mkdir "+dir, path)
		if _, msg, _ := strings.Cut(out, "\n"); err == nil && msg != "" {
			err = errors.New(msg)
		}
		if err != nil {
			return fmt.Errorf("disk %s: debugfs making %s: %w", path, dir, err)
		}
	}
	return nil
}

// e2fsprogs runs one of e2fsprogs' programs (mkfs.ext4, debugfs), found
// in PATH or where Debian and Homebrew install them, and returns its
// output.
func e2fsprogs(ctx context.Context, name string, args ...string) (string, error) {
	bin, err := exec.LookPath(name)
	if err != nil {
		for _, dir := range []string{"/sbin", "/usr/sbin", "/opt/homebrew/opt/e2fsprogs/sbin", "/usr/local/opt/e2fsprogs/sbin"} {
			if _, serr := os.Stat(filepath.Join(dir, name)); serr == nil {
				bin, err = filepath.Join(dir, name), nil
				break
			}
		}
		if err != nil {
			return "", fmt.Errorf("%s (install e2fsprogs): %w", name, err)
		}
	}
	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	msg := strings.TrimSpace(out.String())
	if err != nil {
		return msg, fmt.Errorf("%s: %w: %s", name, err, msg)
	}
	return msg, nil
}
