package planner

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
)

// DownOptions are the down flags that change the plan.
type DownOptions struct {
	Services      []string // SERVICE... arguments; empty means all
	RemoveOrphans bool     // --remove-orphans
}

// Down plans the removal of the project's instances in reverse dependency
// order: an instance is removed only after every instance that depends on
// it. Services disabled by a profile are removed too, as docker compose
// does. It performs no I/O.
func Down(desired Desired, observed Observed, opts DownOptions) (*Plan, error) {
	p := desired.Project
	defined := maps.Clone(p.Services)
	if defined == nil {
		defined = types.Services{}
	}
	maps.Copy(defined, p.DisabledServices)
	for _, t := range opts.Services {
		if _, ok := defined[t]; !ok {
			return nil, fmt.Errorf("no such service: %s (the project has: %s)", t, strings.Join(slices.Sorted(maps.Keys(defined)), ", "))
		}
	}
	// Only the edges matter here; drop the ones to services the file no
	// longer defines instead of failing, so that down always works.
	for name, svc := range defined {
		deps := make(types.DependsOnConfig, len(svc.DependsOn))
		for dep, cfg := range svc.DependsOn {
			if _, ok := defined[dep]; ok {
				deps[dep] = cfg
			}
		}
		svc.DependsOn = deps
		defined[name] = svc
	}
	g, err := NewGraph(defined)
	if err != nil {
		return nil, err
	}
	have := byService(observed)
	b := newBuilder(p.Name, true)
	order := g.topological()
	slices.Reverse(order)
	for _, name := range order {
		if len(opts.Services) > 0 && !slices.Contains(opts.Services, name) {
			continue
		}
		for _, inst := range have[name] {
			reason := "stopped"
			if inst.State == Running {
				reason = "running: stop, then remove"
			}
			b.add(Op{Kind: Remove, Service: name, Number: inst.Number, Reason: reason})
		}
	}
	if len(opts.Services) == 0 {
		b.orphans(p, have, opts.RemoveOrphans)
	}
	return b.finish(g, g.dependents), nil
}
