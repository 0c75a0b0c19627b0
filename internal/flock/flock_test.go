package flock_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/flock"
)

func TestLock(t *testing.T) {
	path := filepath.Join(t.TempDir(), "lock")
	unlock, err := flock.Lock(context.Background(), path, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, err := flock.TryLock(path); ok || err != nil {
		t.Fatalf("TryLock on a held lock: ok=%v err=%v", ok, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := flock.Lock(ctx, path, true); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a shared Lock under an exclusive one: %v, want the context's deadline", err)
	}
	unlock()
	a, err := flock.Lock(context.Background(), path, true)
	if err != nil {
		t.Fatal(err)
	}
	b, err := flock.Lock(context.Background(), path, true)
	if err != nil {
		t.Fatalf("two shared locks: %v", err)
	}
	a()
	b()
	u, ok, err := flock.TryLock(path)
	if !ok || err != nil {
		t.Fatalf("TryLock on a free lock: ok=%v err=%v", ok, err)
	}
	u()
}
