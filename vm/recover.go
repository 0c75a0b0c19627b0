package vm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
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
