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
)

// fakeDriver knows VMs by name and state; it does nothing else.
type fakeDriver struct{ vms map[string]vm.State }

func (f *fakeDriver) Create(context.Context, vm.Spec) error             { return nil }
func (f *fakeDriver) Start(context.Context, string) error               { return nil }
func (f *fakeDriver) Stop(context.Context, string, time.Duration) error { return nil }
func (f *fakeDriver) Kill(context.Context, string) error                { return nil }
func (f *fakeDriver) Remove(context.Context, string) error              { return nil }
func (f *fakeDriver) Inspect(_ context.Context, name string) (vm.Status, error) {
	st, ok := f.vms[name]
	if !ok {
		return vm.Status{}, vm.ErrNotFound
	}
	return vm.Status{Name: name, State: st}, nil
}
func (f *fakeDriver) List(ctx context.Context) ([]vm.Status, error) {
	var out []vm.Status
	for name := range f.vms {
		st, _ := f.Inspect(ctx, name)
		out = append(out, st)
	}
	return out, nil
}

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
	d := &fakeDriver{vms: map[string]vm.State{
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

func TestRestartPolicy(t *testing.T) {
	zero, one := 0, 1
	for _, tc := range []struct {
		restart  string
		code     *int
		restarts int
		stopped  bool
		want     bool
	}{
		{"", &one, 0, false, false},
		{"no", &one, 0, false, false},
		{"always", &zero, 5, false, true},
		{"always", &zero, 0, true, false},
		{"unless-stopped", nil, 0, false, true},
		{"on-failure", &zero, 0, false, false},
		{"on-failure", &one, 100, false, true},
		{"on-failure", nil, 0, false, true},
		{"on-failure:2", &one, 1, false, true},
		{"on-failure:2", &one, 2, false, false},
	} {
		p, err := ParseRestart(types.ServiceConfig{Name: "s", Restart: tc.restart})
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Restarts(tc.code, tc.restarts, tc.stopped); got != tc.want {
			t.Errorf("%q after %d restarts (stopped %v): %v, want %v", tc.restart, tc.restarts, tc.stopped, got, tc.want)
		}
	}
	for _, bad := range []string{"sometimes", "always:3", "on-failure:x"} {
		if _, err := ParseRestart(types.ServiceConfig{Name: "s", Restart: bad}); err == nil || !strings.Contains(err.Error(), `service "s"`) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	max := uint64(3)
	p, err := ParseRestart(types.ServiceConfig{Deploy: &types.DeployConfig{RestartPolicy: &types.RestartPolicy{Condition: "on-failure", MaxAttempts: &max}}})
	if err != nil || p != (RestartPolicy{Mode: "on-failure", MaxRetries: 3}) {
		t.Errorf("deploy.restart_policy: %+v, %v", p, err)
	}
	if Backoff(0) != 100*time.Millisecond || Backoff(3) != 800*time.Millisecond || Backoff(50) != 10*time.Second {
		t.Errorf("backoff: %v %v %v", Backoff(0), Backoff(3), Backoff(50))
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

func TestServiceLogLines(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	l, err := openServiceLog(dir, "web-1", func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	boot := now.Add(-time.Minute)
	if l.offset(boot, "stdout") != 0 {
		t.Fatal("offset of a new boot")
	}
	l.writer("stdout").Write([]byte("one\ntw"))
	l.writer("stderr").Write([]byte("err\r\n"))
	l.writer("stdout").Write([]byte("o\nthr"))
	// A supervisor that dies now has "thr" only in memory: its successor
	// reads it again.
	l2, _ := openServiceLog(dir, "web-1", time.Now)
	if off := l2.offset(boot, "stdout"); off != int64(len("one\ntwo\n")) {
		t.Errorf("stdout offset with a partial line held: %d", off)
	}
	l2.Close()
	l.writer("stdout").Write([]byte("ee"))
	l.flush("stdout")
	l.Close()
	lines, _, err := ReadLog(dir, "web-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, line := range lines {
		got = append(got, line.Stream+":"+line.Text)
		if !line.Time.Equal(now) {
			t.Errorf("time %v", line.Time)
		}
	}
	if g := strings.Join(got, ","); g != "stdout:one,stderr:err,stdout:two,stdout:three" {
		t.Errorf("lines: %s", g)
	}
	// A restarted supervisor resumes where the log ends, for the same boot.
	l, _ = openServiceLog(dir, "web-1", time.Now)
	if off := l.offset(boot, "stdout"); off != int64(len("one\ntwo\nthree")) {
		t.Errorf("stdout offset after reopening: %d", off)
	}
	if off := l.offset(boot.Add(time.Second), "stdout"); off != 0 {
		t.Errorf("offset of a new boot: %d", off)
	}
	l.Close()
	if tail, _, _ := ReadLog(dir, "web-1", 1); len(tail) != 1 || tail[0].Text != "three" {
		t.Errorf("tail 1: %+v", tail)
	}
}
