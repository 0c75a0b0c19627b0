package planner

// PlanStart plans `vmcompose start`: the stopped instances of the selected
// services start, in dependency order; nothing is created or recreated,
// and everything else is left as it is. It performs no I/O.
func PlanStart(desired Desired, observed Observed, opts Options) (*Plan, error) {
	opts.NoRecreate, opts.ForceRecreate = true, false
	plan, err := Up(desired, observed, opts)
	if err != nil {
		return nil, err
	}
	plan.Action = "start"
	for i, op := range plan.Ops {
		switch op.Kind {
		case Start, Nothing:
		case Create, Blocked:
			plan.Ops[i].Kind, plan.Ops[i].Reason = Nothing, "not created: start never creates (use up)"
		default:
			plan.Ops[i].Kind, plan.Ops[i].Reason = Nothing, "left as it is"
		}
	}
	return plan, nil
}

// PlanStop plans `vmcompose stop`: the running instances of the selected
// services (all when none are named) stop, dependents first, and keep
// their disks. It performs no I/O.
func PlanStop(desired Desired, observed Observed, opts DownOptions) (*Plan, error) {
	opts.RemoveOrphans = false
	plan, err := Down(desired, observed, opts)
	if err != nil {
		return nil, err
	}
	plan.Action = "stop"
	running := map[string]bool{}
	for _, inst := range observed.Instances {
		running[inst.Name()] = inst.State == Running
	}
	for i, op := range plan.Ops {
		if running[op.Instance] {
			plan.Ops[i].Kind, plan.Ops[i].Reason = Stop, "running"
		} else {
			plan.Ops[i].Kind, plan.Ops[i].Reason = Nothing, "not running"
		}
	}
	plan.Warnings = nil
	return plan, nil
}
