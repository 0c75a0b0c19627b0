package oci

import (
	"context"
	"errors"
	"syscall"
	"testing"
)

// A full disk fails the pull cleanly: no partial blob, no temporary file,
// index.json unchanged. Needs root to mount a small tmpfs.
func TestPullFullDisk(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=512k"); err != nil {
		t.Skipf("mounting a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	host, _ := newRegistry(t, nil)
	small := host + "/small:1"
	push(t, small, imageOf(t, "linux/amd64", layerOf(t, 1, 8<<10)))
	big := host + "/big:1"
	l := layerOf(t, 2, 2<<20)
	push(t, big, imageOf(t, "linux/amd64", l))
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := s.Pull(ctx, small, WithPlatform("linux/amd64")); err != nil {
		t.Fatal(err)
	}
	before := readIndexFile(t, s)
	_, err = s.Pull(ctx, big, WithPlatform("linux/amd64"), fastRetry)
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("got %v, want ENOSPC", err)
	}
	d, _ := l.Digest()
	if blobs(t, s)[d.String()] || readIndexFile(t, s) != before {
		t.Error("partial blob or index change after a full disk")
	}
	checkStore(t, s)
}
