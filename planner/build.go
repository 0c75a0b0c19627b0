package planner

import (
	"cmp"
	"fmt"
	"slices"

	"github.com/compose-spec/compose-go/v2/types"
)

// builder collects operations service by service, in an order where every
// service comes after the services its operations wait for, then orders and
// numbers them.
type builder struct {
	plan  *Plan
	bySvc map[string][]int // service -> indexes into plan.Ops
}

func newBuilder(project string, down bool) *builder {
	action := "up"
	if down {
		action = "down"
	}
	return &builder{plan: &Plan{Project: project, Action: action, Down: down, Ops: []Op{}}, bySvc: map[string][]int{}}
}

func (b *builder) add(op Op) {
	op.Instance = InstanceName(op.Service, op.Number)
	b.bySvc[op.Service] = append(b.bySvc[op.Service], len(b.plan.Ops))
	b.plan.Ops = append(b.plan.Ops, op)
}

// orphans handles the instances of services the project no longer defines:
// removed with --remove-orphans, reported otherwise.
func (b *builder) orphans(p *types.Project, have map[string][]Instance, remove bool) {
	var names []string
	for name := range have {
		if _, ok := p.Services[name]; ok {
			continue
		}
		if _, ok := p.DisabledServices[name]; ok {
			continue
		}
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		for _, inst := range have[name] {
			if remove {
				b.add(Op{Kind: Remove, Service: name, Number: inst.Number, Reason: "orphan: the service is no longer in the compose file"})
				continue
			}
			b.plan.Warnings = append(b.plan.Warnings, fmt.Sprintf(
				"orphan VM %s: service %q is no longer in the compose file; run with --remove-orphans to remove it", inst.Name(), name))
		}
	}
}

// finish makes every operation of a service wait for all operations of the
// services waitFor returns (as graph indexes), computes waves, sorts and numbers the
// operations. Operations were added so that the ones waited for come first.
func (b *builder) finish(g *Graph, waitFor func(svc int) []int) *Plan {
	ops := b.plan.Ops
	after := make([][]int, len(ops)) // indexes, not IDs yet
	for i := range ops {
		j, inGraph := g.index[ops[i].Service]
		if !inGraph {
			ops[i].Wave = 1
			continue
		}
		wave := 1
		for _, s := range waitFor(j) {
			for _, k := range b.bySvc[g.names[s]] {
				after[i] = append(after[i], k)
				wave = max(wave, ops[k].Wave+1)
			}
		}
		ops[i].Wave = wave
	}

	order := make([]int, len(ops))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(x, y int) int {
		return cmp.Or(
			cmp.Compare(ops[x].Wave, ops[y].Wave),
			cmp.Compare(ops[x].Service, ops[y].Service),
			cmp.Compare(ops[x].Number, ops[y].Number))
	})
	id := make([]int, len(ops))
	for pos, i := range order {
		id[i] = pos + 1
	}
	sorted := make([]Op, len(ops))
	for pos, i := range order {
		op := ops[i]
		op.ID = pos + 1
		op.After = nil
		for _, k := range after[i] {
			op.After = append(op.After, id[k])
		}
		slices.Sort(op.After)
		sorted[pos] = op
	}
	b.plan.Ops = sorted
	return b.plan
}
