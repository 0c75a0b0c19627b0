//go:build unix

// Package flock takes advisory file locks (flock(2)) that a context can
// stop waiting for. It imports only the standard library, so any package
// may use it.
package flock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// Lock takes an exclusive (or, with shared, a shared) lock on path,
// creating the file when missing. It polls, backing off up to 100 ms, so
// that ctx can stop the wait. The returned function releases the lock; the
// file stays.
func Lock(ctx context.Context, path string, shared bool) (unlock func(), err error) {
	how := syscall.LOCK_EX
	if shared {
		how = syscall.LOCK_SH
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	delay := time.Millisecond
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil // closing releases the lock
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("locking %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// TryLock takes an exclusive lock on path if nobody holds one, without
// waiting; ok reports whether it did.
func TryLock(path string) (unlock func(), ok bool, err error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, false, fmt.Errorf("locking %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("locking %s: %w", path, err)
	}
	return func() { f.Close() }, true, nil
}

// LockWithin takes the exclusive lock at path, waiting up to wait: a
// process that is exiting may hold it a moment longer. A lock still held
// then belongs to a process that runs, and LockWithin returns busy.
func LockWithin(ctx context.Context, path string, wait time.Duration, busy error) (unlock func(), err error) {
	lctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	unlock, err = Lock(lctx, path, false)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return nil, busy
	}
	return unlock, err
}
