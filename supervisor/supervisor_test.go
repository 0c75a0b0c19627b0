package supervisor

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/network"
	"github.com/vmcompose/vmcompose/network/netproc"
	"github.com/vmcompose/vmcompose/network/netproc/netproctest"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/reconcile"
	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/vm/vmfake"
)

// TestSupervisorIdleExit: a supervisor with nothing to run exits once idle,
// removing its socket; a second one cannot start while the first runs.
func TestSupervisorIdleExit(t *testing.T) {
	dir := t.TempDir()
	var ticks atomic.Int64
	base := time.Now()
	fired := make(chan time.Time)
	close(fired)
	s := NewSupervisor(dir, nil)
	s.Runtime = &reconcile.Runtime{Driver: &vmfake.Driver{VMs: map[string]vm.State{}}}
	s.IdleExit = time.Hour
	s.Now = func() time.Time { return base.Add(time.Duration(ticks.Load()) * time.Minute) }
	release := make(chan struct{})
	s.After = func(time.Duration) <-chan time.Time {
		<-release
		ticks.Add(30)
		return fired
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(SocketPath(dir)); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no socket")
		}
		time.Sleep(5 * time.Millisecond)
	}
	second := NewSupervisor(dir, nil)
	second.Runtime = s.Runtime
	second.LockWait = 100 * time.Millisecond
	if err := second.Run(context.Background()); !errors.Is(err, ErrSupervisorRunning) {
		t.Errorf("a second supervisor: %v, want ErrSupervisorRunning", err)
	}
	select {
	case err := <-done:
		t.Fatalf("exited before it was idle: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the idle supervisor did not exit")
	}
	if _, err := os.Stat(SocketPath(dir)); err == nil {
		t.Error("socket left behind")
	}
}

// TestSupervisorReleasesNetwork: a supervisor that exits with no VM
// running ends the network process, which no VM needs.
func TestSupervisorReleasesNetwork(t *testing.T) {
	dir := t.TempDir()
	n, _, ended := netproctest.InProcess(dir)
	rec := &netproc.Record{
		Project:     "proj",
		Endpoint:    network.Endpoint{Instance: "web-1", Service: "web"},
		Attachments: []network.Attachment{{Network: "default"}},
		Networks:    []network.NetworkConfig{{Name: "default", Subnet: "10.77.0.0/24"}},
	}
	if err := n.Reattach(context.Background(), "web-1", rec); err != nil {
		t.Fatal(err)
	}
	s := NewSupervisor(dir, nil)
	s.Runtime = &reconcile.Runtime{Driver: &vmfake.Driver{VMs: map[string]vm.State{"web-1": vm.StateExited}}}
	s.NetworkRelease = n.Release
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for !exists(SocketPath(dir)) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case <-ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the network process outlived a supervisor that left no VM running")
	}
	if exists(netproc.SocketPath(dir)) {
		t.Error("network.sock left")
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestTransientFailureRestarts: an instance whose agent does not answer
// in time failed in a way a retry may fix: its restart policy decides.
// With restart: always it is booted again; with no, it ends, saying why.
func TestTransientFailureRestarts(t *testing.T) {
	for _, tc := range []struct {
		policy string
		again  bool
	}{{"always", true}, {"no", false}} {
		t.Run(tc.policy, func(t *testing.T) {
			s := NewSupervisor(t.TempDir(), nil)
			s.Runtime = &reconcile.Runtime{Driver: &vmfake.Driver{VMs: map[string]vm.State{"web-1": vm.StateRunning}}}
			s.AgentWait = 50 * time.Millisecond // nothing answers on the fake VM's channel
			in := s.instance(reconcile.InstanceState{VM: "web-1", Restart: planner.RestartPolicy{Mode: tc.policy}})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go s.watch(ctx, in, false, done)
			deadline := time.After(20 * time.Second)
			for {
				r, changed := in.snapshot()
				if tc.again && r.Restarts >= 2 {
					break
				}
				if !tc.again && r.Error != "" {
					if r.Restarts != 0 || r.Phase != "exited" {
						t.Errorf("restart: no: %d restarts, phase %s", r.Restarts, r.Phase)
					}
					break
				}
				select {
				case <-changed:
				case <-done:
					if tc.again {
						t.Fatalf("the watch ended after a transient failure: %+v", r)
					}
				case <-deadline:
					t.Fatalf("still waiting: %+v", r)
				}
			}
			cancel()
			<-done
		})
	}
}
