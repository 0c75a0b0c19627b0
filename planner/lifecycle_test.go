package planner_test

import (
	"testing"

	"github.com/vmcompose/vmcompose/planner"
)

func TestStartAndStop(t *testing.T) {
	p := load(t, chain)
	// api-1 is stopped, web-1 runs, db-1 was never created.
	var o planner.Observed
	for _, inst := range running(t, p).Instances {
		switch inst.Service {
		case "api":
			inst.State = planner.Stopped
		case "db":
			continue
		}
		o.Instances = append(o.Instances, inst)
	}
	start, err := planner.PlanStart(planner.Desired{Project: p}, o, planner.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := `project demo (start): 3 operations in 3 waves: 1 start, 2 unchanged
wave 1
  1  nothing  db-1   not created: start never creates (use up)
wave 2
  2  start    api-1  stopped (after 1)
wave 3
  3  nothing  web-1  up to date (after 2)
`
	if got := start.String(); got != want {
		t.Errorf("start:\n%s\nwant:\n%s", got, want)
	}

	stop, err := planner.PlanStop(planner.Desired{Project: p}, o, planner.DownOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want = `project demo (stop): 2 operations in 2 waves: 1 stop, 1 unchanged
wave 1
  1  stop     web-1  running
wave 2
  2  nothing  api-1  not running (after 1)
`
	if got := stop.String(); got != want {
		t.Errorf("stop:\n%s\nwant:\n%s", got, want)
	}
}
