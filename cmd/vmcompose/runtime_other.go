//go:build !linux

package main

import (
	"fmt"
	"runtime"

	"github.com/urfave/cli/v2"

	"github.com/vmcompose/vmcompose/reconcile"
)

// newRuntime: the VM backends of other systems (vz on macOS) are not
// built yet.
func newRuntime(*cli.Context, string) (*reconcile.Runtime, error) {
	return nil, fmt.Errorf("running VMs on %s is not supported yet: vmcompose runs VMs on Linux with QEMU", runtime.GOOS)
}
