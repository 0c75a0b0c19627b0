package planner_test

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/planner"
)

// randomProject makes a random DAG of n services: service i may depend on
// any service created before it, and names are shuffled so that name order
// says nothing about dependency order.
func randomProject(r *rand.Rand, n int) *types.Project {
	names := make([]string, n)
	for i, j := range r.Perm(n) {
		names[i] = fmt.Sprintf("s%04d", j)
	}
	services := types.Services{}
	for i, name := range names {
		var deps []string
		if i > 0 {
			for range r.IntN(4) {
				deps = append(deps, names[r.IntN(i)])
			}
		}
		services[name] = service(name, deps...)
	}
	return &types.Project{Name: "random", Services: services}
}

func TestPlanOrderProperty(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := range 60 {
		n := 1 + r.IntN(500)
		p := randomProject(r, n)

		up, err := planner.Up(planner.Desired{Project: p}, planner.Observed{}, planner.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if len(up.Ops) != n {
			t.Fatalf("iteration %d: %d operations for %d services", iter, len(up.Ops), n)
		}
		checkOrder(t, up, func(svc types.ServiceConfig) []string {
			var deps []string
			for d := range svc.DependsOn {
				deps = append(deps, d)
			}
			return deps
		}, p)

		var observed planner.Observed
		for name := range p.Services {
			observed.Instances = append(observed.Instances, planner.Instance{Service: name, Number: 1, State: planner.Running})
		}
		down, err := planner.Down(planner.Desired{Project: p}, observed, planner.DownOptions{})
		if err != nil {
			t.Fatal(err)
		}
		dependents := map[string][]string{}
		for name, svc := range p.Services {
			for d := range svc.DependsOn {
				dependents[d] = append(dependents[d], name)
			}
		}
		checkOrder(t, down, func(svc types.ServiceConfig) []string { return dependents[svc.Name] }, p)
	}
}

// checkOrder verifies that every operation comes after, and in a later wave
// than, the operations of every service first(svc) names, and lists them in
// After.
func checkOrder(t *testing.T, plan *planner.Plan, first func(types.ServiceConfig) []string, p *types.Project) {
	t.Helper()
	pos := map[string]int{}
	for i, op := range plan.Ops {
		if op.ID != i+1 {
			t.Fatalf("op %d has ID %d", i, op.ID)
		}
		pos[op.Service] = i
	}
	for i, op := range plan.Ops {
		for _, before := range first(p.Services[op.Service]) {
			j := pos[before]
			if j >= i || plan.Ops[j].Wave >= op.Wave {
				t.Fatalf("down=%v: %s (#%d, wave %d) must come after %s (#%d, wave %d)",
					plan.Down, op.Instance, op.ID, op.Wave, before, plan.Ops[j].ID, plan.Ops[j].Wave)
			}
			found := false
			for _, a := range op.After {
				found = found || a == plan.Ops[j].ID
			}
			if !found {
				t.Fatalf("down=%v: %s does not list %s in After %v", plan.Down, op.Instance, before, op.After)
			}
		}
	}
}
