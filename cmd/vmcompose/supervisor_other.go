//go:build !linux

package main

import (
	"fmt"
	"log/slog"
	"runtime"

	"github.com/vmcompose/vmcompose/reconcile"
	"github.com/vmcompose/vmcompose/supervisor"
	"github.com/vmcompose/vmcompose/vm"
)

func supervisorRuntime(string, *supervisor.Supervisor, *slog.Logger) (*reconcile.Runtime, error) {
	return nil, fmt.Errorf("running VMs on %s is not supported yet: vmcompose runs VMs on Linux with QEMU", runtime.GOOS)
}

func localDriver(string) (vm.Driver, error) { return nil, nil }
