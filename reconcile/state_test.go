package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/vm/vmfake"
)

func TestObserveVMs(t *testing.T) {
	dir := t.TempDir()
	rec := func(svc string, n int, state planner.State, hash string) InstanceState {
		return InstanceState{Instance: planner.Instance{Service: svc, Number: n, State: state, Hash: hash}, VM: planner.InstanceName(svc, n)}
	}
	err := WriteState(dir, State{Project: "p", Instances: []InstanceState{
		rec("web", 1, planner.Running, "h1"), // its VM exited
		rec("db", 1, planner.Running, "h2"),  // its VM is gone
		rec("app", 1, planner.Stopped, "h3"), // its VM runs
	}})
	if err != nil {
		t.Fatal(err)
	}
	d := &vmfake.Driver{VMs: map[string]vm.State{
		"web-1": vm.StateExited, "app-1": vm.StateRunning,
		"new-2":          vm.StateRunning, // created, never recorded
		"web-run-0a1b2c": vm.StateRunning, // a `run` VM
	}}
	o, err := ObserveVMs(context.Background(), dir, d)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range o.Observed().Instances {
		got = append(got, in.Name()+":"+string(in.State)+":"+in.Hash)
	}
	want := "app-1:running:h3 new-2:running: web-1:stopped:h1"
	if g := strings.Join(sortStrings(got), " "); g != want {
		t.Errorf("observed %s, want %s", g, want)
	}
}

func sortStrings(s []string) []string {
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s
}

func TestWriteStateLeavesNoTemporaryFile(t *testing.T) {
	dir := t.TempDir()
	for i := range 3 {
		if err := WriteState(dir, State{Project: "p", Instances: []InstanceState{{VM: "a-1", Restarts: i}}}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := ReadState(dir)
	if err != nil || len(s.Instances) != 1 || s.Instances[0].Restarts != 2 {
		t.Errorf("read back %+v, %v", s, err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(files) != 1 {
		t.Errorf("files in the state dir: %v", files)
	}
	os.WriteFile(filepath.Join(dir, StateFile), []byte("{"), 0o600)
	if _, err := ReadState(dir); err == nil || !strings.Contains(err.Error(), "move the file away") {
		t.Errorf("corrupt state: %v", err)
	}
}

func TestParseHealth(t *testing.T) {
	d := func(s time.Duration) *types.Duration { v := types.Duration(s); return &v }
	three := uint64(3)
	h, err := ParseHealth("s", &types.HealthCheckConfig{Test: []string{"CMD-SHELL", "wget -q 127.0.0.1"}, Interval: d(time.Second), Retries: &three, StartPeriod: d(5 * time.Second)})
	if err != nil || strings.Join(h.Argv, "|") != "/bin/sh|-c|wget -q 127.0.0.1" || h.Interval != time.Second || h.Timeout != 30*time.Second ||
		h.Retries != 3 || h.StartPeriod != 5*time.Second || h.StartInterval != 5*time.Second {
		t.Errorf("CMD-SHELL: %+v, %v", h, err)
	}
	h, _ = ParseHealth("s", &types.HealthCheckConfig{Test: []string{"CMD", "test", "-f", "/ready"}})
	if strings.Join(h.Argv, "|") != "test|-f|/ready" {
		t.Errorf("CMD: %+v", h)
	}
	for _, none := range []*types.HealthCheckConfig{nil, {Test: []string{"NONE"}}, {Test: []string{"CMD", "true"}, Disable: true}} {
		if h, err := ParseHealth("s", none); h != nil || err != nil {
			t.Errorf("%+v: %+v, %v", none, h, err)
		}
	}
}
