package volume

import (
	"context"
	"fmt"

	"github.com/vmcompose/vmcompose/vm"
)

// Recover readies a disk volume for a read-only user: when its file
// system has a journal to replay (the VM that last wrote it was killed)
// and no QEMU has it open, e2fsck -p replays it, QEMUs being kept from
// opening it to write meanwhile. A kernel mounting it read-only would
// refuse to mount it otherwise. It says whether it replayed anything.
// Shared volumes need nothing.
func (s *Store) Recover(ctx context.Context, v Volume) (bool, error) {
	if v.Kind != Disk {
		return false, nil
	}
	path := v.Mountpoint()
	need, err := vm.NeedsRecovery(path)
	if err != nil || !need {
		return false, err
	}
	release, err := holdOff(path)
	if err != nil {
		return false, err
	}
	defer release()
	if open, _, err := Opened(path); err != nil || open {
		// Its writer's kernel owns the journal; a read-only attach
		// beside a writer is refused anyway.
		return false, err
	}
	if err := vm.RecoverVolume(ctx, path); err != nil {
		return false, fmt.Errorf("volume %s: %w", v.Name, err)
	}
	return true, nil
}
