// Package vmfake is a vm.Driver for the unit tests of the packages above
// vm: it knows VMs by name and state and does nothing else. Tests that a
// feature works use a real backend (vm/vmtest).
package vmfake

import (
	"context"
	"time"

	"github.com/vmcompose/vmcompose/vm"
)

// Driver knows the VMs in VMs, by name, in their states.
type Driver struct{ VMs map[string]vm.State }

var _ vm.Driver = (*Driver)(nil)

func (f *Driver) Create(context.Context, vm.Spec) error             { return nil }
func (f *Driver) Start(context.Context, string) error               { return nil }
func (f *Driver) Stop(context.Context, string, time.Duration) error { return nil }
func (f *Driver) Kill(context.Context, string) error                { return nil }
func (f *Driver) Remove(context.Context, string) error              { return nil }

func (f *Driver) Inspect(_ context.Context, name string) (vm.Status, error) {
	st, ok := f.VMs[name]
	if !ok {
		return vm.Status{}, vm.ErrNotFound
	}
	return vm.Status{Name: name, State: st}, nil
}

func (f *Driver) List(ctx context.Context) ([]vm.Status, error) {
	var out []vm.Status
	for name := range f.VMs {
		st, _ := f.Inspect(ctx, name)
		out = append(out, st)
	}
	return out, nil
}
