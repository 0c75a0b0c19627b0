//go:build unix && !linux

package netproc

import (
	"context"
	"errors"
	"syscall"
	"time"
)

// waitPid returns once the process pid has ended, or ctx is done: it
// looks every half second (no pidfd here; launchd reaps orphans).
func waitPid(ctx context.Context, pid int) error {
	for {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}
