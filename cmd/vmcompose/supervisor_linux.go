package main

import (
	"path/filepath"

	"log/slog"

	"github.com/vmcompose/vmcompose/reconcile"
	"github.com/vmcompose/vmcompose/supervisor"
	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/vm/qemu"
)

// supervisorRuntime opens the store and the QEMU driver of the project
// whose state dir is dir, for its supervisor: VMs outlive the process and
// are stopped through the supervisor's agent connections.
func supervisorRuntime(dir string, sup *supervisor.Supervisor, log *slog.Logger) (*reconcile.Runtime, error) {
	store, err := openStore()
	if err != nil {
		return nil, err
	}
	driver, err := qemu.New(reconcile.VMRoot(dir), qemu.WithGuestShutdown(sup.GuestShutdown), qemu.WithLogger(log),
		qemu.WithTemplates(filepath.Join(store.Dir(), "templates")))
	if err != nil {
		return nil, err
	}
	init, err := reconcile.FindInit()
	if err != nil {
		return nil, err
	}
	return &reconcile.Runtime{Store: store, Driver: driver, Init: init, Drivers: localDriver}, nil
}

// localDriver opens the project's VMs read-mostly, to observe them from the
// CLI; nil when the project never had a VM.
func localDriver(dir string) (vm.Driver, error) {
	if !fileExists(reconcile.VMRoot(dir)) {
		return nil, nil
	}
	return qemu.New(reconcile.VMRoot(dir))
}
