package reconcile

import (
	"context"
	"errors"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/vm"
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
	s.Runtime = &Runtime{Driver: &fakeDriver{vms: map[string]vm.State{}}}
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
