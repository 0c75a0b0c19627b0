package reconcile

import (
	"context"
	"errors"
	"fmt"

	"github.com/compose-spec/compose-go/v2/types"
	"golang.org/x/sync/errgroup"

	"github.com/vmcompose/vmcompose/planner"
)

// An Executor carries out a plan's operations for Execute; the supervisor
// is the one that does.
type Executor interface {
	// Do carries out one operation.
	Do(ctx context.Context, op planner.Op) error
	// Await returns once the instance meets a depends_on condition, or
	// why it never will; nil at once for an instance it does not know.
	Await(ctx context.Context, instance, condition string) error
}

// Execute runs the plan's operations, each as soon as the operations it
// comes after are done and, going up, their instances meet the depends_on
// condition. A failed operation fails the ones that depend on it (unless
// depends_on says required: false); the others go on.
func Execute(ctx context.Context, p *types.Project, plan *planner.Plan, x Executor) error {
	n := len(plan.Ops)
	done := make([]chan struct{}, n+1)
	errs := make([]error, n+1)
	for i := range done {
		done[i] = make(chan struct{})
	}
	byID := make([]planner.Op, n+1)
	for _, op := range plan.Ops {
		byID[op.ID] = op
	}
	var g errgroup.Group
	for _, op := range plan.Ops {
		g.Go(func() error {
			defer close(done[op.ID])
			err := waitAfter(ctx, p, plan, op, byID, done, errs, x)
			if err == nil {
				err = x.Do(ctx, op)
			}
			errs[op.ID] = err
			return err
		})
	}
	g.Wait()
	var all []error
	for _, op := range plan.Ops {
		if errs[op.ID] != nil && !errors.Is(errs[op.ID], errSkipped) {
			all = append(all, errs[op.ID])
		}
	}
	if len(all) == 0 {
		for _, op := range plan.Ops {
			if errs[op.ID] != nil {
				return errs[op.ID]
			}
		}
		return nil
	}
	return all[0]
}

// errSkipped marks an operation not run because one it depends on failed.
var errSkipped = errors.New("skipped")

// waitAfter waits for the operations op comes after, and for the
// conditions of its service's depends_on on them.
func waitAfter(ctx context.Context, p *types.Project, plan *planner.Plan, op planner.Op, byID []planner.Op, done []chan struct{}, errs []error, x Executor) error {
	svc := p.Services[op.Service]
	for _, a := range op.After {
		select {
		case <-done[a]:
		case <-ctx.Done():
			return ctx.Err()
		}
		dep := byID[a]
		cfg, isDep := svc.DependsOn[dep.Service]
		required := !isDep || cfg.Required
		if errs[a] != nil {
			if required {
				return fmt.Errorf("service %q: not started: dependency %s failed: %w", op.Service, dep.Instance, errSkipped)
			}
			continue
		}
		if plan.Down || !isDep || dep.Kind == planner.Remove || dep.Kind == planner.Stop {
			continue
		}
		if err := x.Await(ctx, dep.Instance, cfg.Condition); err != nil {
			if !required {
				continue
			}
			return fmt.Errorf("service %q: dependency failed to meet %s: %w", op.Service, cfg.Condition, err)
		}
	}
	return nil
}
