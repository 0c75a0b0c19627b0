package netproc

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"
)

// waitPid returns once the process pid has ended, or ctx is done. It
// needs not be the process's parent: a pidfd turns readable when the
// process exits, also when it stays a zombie because its new parent does
// not reap it (as PID 1 of some containers does not), where kill(pid, 0)
// would still find it.
func waitPid(ctx context.Context, pid int) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil // gone already
	}
	if err != nil {
		return fmt.Errorf("watching process %d: %w", pid, err)
	}
	defer unix.Close(fd)
	for ctx.Err() == nil {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 500) // ms: then look at ctx again
		if err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("watching process %d: %w", pid, err)
		}
		if n > 0 {
			return nil
		}
	}
	return ctx.Err()
}
