package volume

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// QEMU's image locking (block/file-posix.c): a process that opened an
// image holds a shared OFD lock on byte 100+i for each permission i it
// has, and on 200+i for each it denies others. Every user has "consistent
// read" (0); writers have "write" (1).
const (
	lockConsistentRead = 100
	lockWrite          = 101
)

// Opened says whether a process (a QEMU, of any project) has the disk
// image at path open, and whether to write, by probing the locks QEMU
// takes on it: it finds users of any state dir, but not programs that
// take no such locks.
func Opened(path string) (open, writer bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return false, false, fmt.Errorf("volume disk: %w", err)
	}
	defer f.Close()
	if open, err = locked(f, lockConsistentRead); err != nil || !open {
		return open, false, err
	}
	writer, err = locked(f, lockWrite)
	return open, writer, err
}

// locked says whether another open file description holds a lock on
// byte off of f.
func locked(f *os.File, off int64) (bool, error) {
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Start: off, Len: 1}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_GETLK, &lk); err != nil {
		return false, fmt.Errorf("probing the locks on %s: %w", f.Name(), err)
	}
	return lk.Type != unix.F_UNLCK, nil
}

// holdOff keeps QEMUs from opening the disk image at path until the
// returned func is called: it takes the locks by which a QEMU denies
// others "consistent read" and "write" (200 and 201), which every QEMU
// opening an image checks.
func holdOff(path string) (release func(), err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	lk := unix.Flock_t{Type: unix.F_RDLCK, Whence: 0, Start: 200, Len: 2}
	if err := unix.FcntlFlock(f.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}
