// Package kerneltest gives tests the real guest kernel: the one in the
// vmcompose store, fetched there once when missing, so that every test run
// after the first (and CI after its setup step) reuses it.
//
// It is for tests only; it imports testing, internal/testenv and the oci
// store.
package kerneltest

import (
	"context"
	"errors"
	"os/exec"
	"sync"
	"testing"

	"github.com/vmcompose/vmcompose/internal/testenv"
	"github.com/vmcompose/vmcompose/oci"
	"github.com/vmcompose/vmcompose/vm/kernel"
)

var (
	once   sync.Once
	cached *kernel.Kernel
	err    error
)

// Kernel returns the store's kernel, fetching it when there is none. Without
// apt-get (a non-Debian host) it skips the test, unless CI is set. The
// first call decides for the whole test binary: make it before a test
// changes VMCOMPOSE_KERNEL or VMCOMPOSE_HOME.
func Kernel(t testing.TB) *kernel.Kernel {
	t.Helper()
	once.Do(func() {
		var dir string
		if dir, err = oci.DefaultDir(); err != nil {
			return
		}
		cached, err = kernel.Find(dir)
		if !errors.Is(err, kernel.ErrNotFound) {
			return
		}
		if _, lerr := exec.LookPath("apt-get"); lerr != nil {
			return
		}
		cached, err = kernel.Fetch(context.Background(), dir)
	})
	if errors.Is(err, kernel.ErrNotFound) {
		testenv.Missing(t, "no guest kernel and no apt-get to fetch one: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return cached
}
