package devloop

import (
	"context"
	"slices"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/supervisor"
)

// restartDependants maps each service to the services a restart of it
// restarts, as compose restarts them: those whose depends_on names it with
// restart: true, and theirs in turn, each once, sorted.
func restartDependants(services types.Services) map[string][]string {
	direct := map[string][]string{}
	for name, svc := range services {
		for dep, d := range svc.DependsOn {
			if d.Restart {
				direct[dep] = append(direct[dep], name)
			}
		}
	}
	out := map[string][]string{}
	for name := range services {
		seen := map[string]bool{name: true}
		queue := slices.Clone(direct[name])
		var all []string
		for len(queue) > 0 {
			d := queue[0]
			queue = queue[1:]
			if seen[d] {
				continue
			}
			seen[d] = true
			all = append(all, d)
			queue = append(queue, direct[d]...)
		}
		if len(all) > 0 {
			slices.Sort(all)
			out[name] = all
		}
	}
	return out
}

// restartDependants restarts, in place, the running replicas of the
// services that depend on service with restart: true, after its own
// process restarted, and records them in ev; it returns what failed.
func (l *Loop) restartDependants(ctx context.Context, service string, ev *Event) []string {
	var failed []string
	for _, d := range l.dependants[service] {
		replicas, err := l.opts.Running(ctx, d)
		if err != nil {
			failed = append(failed, d+": "+err.Error())
			continue
		}
		if len(replicas) == 0 {
			continue // stopped by the user: left so
		}
		if _, err := supervisor.RestartProcess(ctx, l.opts.Dir, &supervisor.Request{Services: []string{d}}); err != nil {
			failed = append(failed, d+": "+err.Error())
			continue
		}
		ev.Dependants = append(ev.Dependants, d)
	}
	return failed
}
