//go:build linux

package qemu

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// procStart returns the start time of process pid (field 22 of
// /proc/<pid>/stat, in clock ticks since boot) and whether it is a zombie,
// which has ended but not been reaped.
func procStart(pid int) (start uint64, zombie bool, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, false, err
	}
	// The command name (field 2) is in parentheses and may hold anything,
	// spaces and ')' included: fields resume after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, false, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := bytes.Fields(b[i+1:])
	// f[0] is field 3 (state); field 22 is f[19].
	if len(f) < 20 {
		return 0, false, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	start, err = strconv.ParseUint(string(f[19]), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("/proc/%d/stat: start time: %w", pid, err)
	}
	return start, string(f[0]) == "Z" || string(f[0]) == "X", nil
}

// alive reports whether pid is still the process that started at start
// and has not ended.
func alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	s, zombie, err := procStart(pid)
	return err == nil && s == start && !zombie
}

// waitGone blocks until process pid with start time start has ended (or
// is a zombie), or ctx is done. It works for processes that are not our
// children (adopted VMs) through a pidfd.
func waitGone(ctx context.Context, pid int, start uint64) error {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil
		}
		fd = -1 // old kernel: poll /proc below
	} else {
		defer unix.Close(fd)
	}
	// Check after opening the pidfd: the pid might have been reused before.
	if !alive(pid, start) {
		return nil
	}
	for {
		if fd >= 0 {
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			n, err := unix.Poll(fds, 50)
			if err != nil && !errors.Is(err, unix.EINTR) {
				return fmt.Errorf("polling pidfd of %d: %w", pid, err)
			}
			if n > 0 {
				return nil
			}
		} else {
			time.Sleep(20 * time.Millisecond)
		}
		if !alive(pid, start) {
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// killPid sends sig to pid if it is still the process that started at
// start.
func killPid(pid int, start uint64, sig unix.Signal) error {
	if !alive(pid, start) {
		return nil
	}
	if err := unix.Kill(pid, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return err
	}
	return nil
}

// bootID identifies this boot of the host: a process start time only
// means something within one boot.
func bootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return string(bytes.TrimSpace(b))
}

// dialUnix connects to a unix socket. A path too long for sockaddr_un is
// reached through /proc/self/fd/<dirfd>/<base>.
func dialUnix(ctx context.Context, d *net.Dialer, path string) (net.Conn, error) {
	if len(path) < 100 {
		return d.DialContext(ctx, "unix", path)
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer dir.Close()
	short := fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path))
	return d.DialContext(ctx, "unix", short)
}
