package main

import (
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/vmcompose/vmcompose/oci"
	"github.com/vmcompose/vmcompose/reconcile"
	"github.com/vmcompose/vmcompose/vm/qemu"
)

// newRuntime opens the store and the QEMU driver of a project.
func newRuntime(c *cli.Context, projectName string) (*reconcile.Runtime, error) {
	store, err := openStore()
	if err != nil {
		return nil, err
	}
	root, err := vmRoot(projectName)
	if err != nil {
		return nil, err
	}
	driver, err := qemu.New(root, qemu.WithTemplates(filepath.Join(store.Dir(), "templates")))
	if err != nil {
		return nil, err
	}
	init, err := reconcile.FindInit()
	if err != nil {
		return nil, err
	}
	prog := newProgress(c)
	return &reconcile.Runtime{Store: store, Driver: driver, Init: init, Drivers: localDriver, Progress: func(e oci.Event) { prog.Image(e) }}, nil
}
