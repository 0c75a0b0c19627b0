package vm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
)

// superblock reads the first 0x88 bytes of the ext4 superblock of the
// disk at path (at offset 1024), and checks its magic.
func superblock(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("volume disk: %w", err)
	}
	defer f.Close()
	sb := make([]byte, 0x88)
	if _, err := f.ReadAt(sb, 1024); err != nil {
		return nil, fmt.Errorf("volume disk %s: reading its superblock: %w", path, err)
	}
	if sb[0x38] != 0x53 || sb[0x39] != 0xef {
		return nil, fmt.Errorf("volume disk %s: not an ext4 file system", path)
	}
	return sb, nil
}

// NeedsRecovery says whether the ext4 file system of the disk at path has
// a journal to replay: its last writer did not unmount it (its VM was
// killed). A kernel that mounts it read-only cannot replay it, and
// refuses to mount it.
func NeedsRecovery(path string) (bool, error) {
	sb, err := superblock(path)
	if err != nil {
		return false, err
	}
	const incompatRecover = 0x4 // s_feature_incompat at 0x60
	return binary.LittleEndian.Uint32(sb[0x60:])&incompatRecover != 0, nil
}

// RecoverVolume replays the journal of the ext4 disk at path and fixes
// what e2fsck -p (preen) fixes without asking. Nothing may have the disk
// open meanwhile. It needs e2fsck (e2fsprogs).
func RecoverVolume(ctx context.Context, path string) error {
	out, err := e2fsprogs(ctx, "e2fsck", "-p", path)
	var ee *exec.ExitError
	// 1: errors corrected; 2: corrected, a mounted root would want a
	// reboot (not ours: the disk is not mounted here).
	if errors.As(err, &ee) && (ee.ExitCode() == 1 || ee.ExitCode() == 2) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking %s: %w (repair it with e2fsck -f %s)", path, errors.New(out), path)
	}
	return nil
}

// Debugfs runs debugfs on the ext4 disk at path, read-only, with the
// commands cmds (one a line, run in order by one process), and returns
// what it printed: each command's output follows a line "debugfs: CMD".
// debugfs exits 0 whatever its commands do: the caller reads the output.
func Debugfs(ctx context.Context, path string, cmds []string) (string, error) {
	f, err := os.CreateTemp("", "debugfs-*.cmds")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	for _, c := range cmds {
		fmt.Fprintln(f, c)
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	return e2fsprogs(ctx, "debugfs", "-f", f.Name(), path)
}

// CheckVolume runs e2fsck -fn on the ext4 disk at path: an error when
// the file system is not clean (names with '/' in them, entries that
// lead out of their directory and the like are errors e2fsck reports).
func CheckVolume(ctx context.Context, path string) error {
	if out, err := e2fsprogs(ctx, "e2fsck", "-fn", path); err != nil {
		return fmt.Errorf("%s is not a clean ext4 file system (repair it with e2fsck -f %s): %s", path, path, lastLines(out, 3))
	}
	return nil
}

// lastLines is the last n lines of s, joined with "; ".
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}
