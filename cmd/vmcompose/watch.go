package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vmcompose/vmcompose/devloop"
	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/watch"
)

func watchCommand() *cli.Command {
	return &cli.Command{
		Name:      "watch",
		Usage:     "bring the services up and sync their develop.watch paths into their VMs as they change",
		ArgsUsage: "[SERVICE...]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "no-up", Usage: "do not bring the services up first"},
			&cli.BoolFlag{Name: "quiet", Usage: "print only what failed"},
			&cli.BoolFlag{Name: "prune", Value: true, Usage: "prune images a rebuild left dangling (nothing to do: vmcompose does not rebuild)"},
		},
		Action: runWatch,
	}
}

func runWatch(c *cli.Context) error {
	p, dir, err := projectState(c)
	if err != nil {
		return err
	}
	names, err := watchedServices(c, p)
	if err != nil {
		return err
	}
	var rules []watch.Rule
	for _, name := range names {
		rules = append(rules, watch.Rules(p.Services[name])...)
	}
	if !c.Bool("no-up") {
		req, err := request(c)
		if err != nil {
			return err
		}
		req.Services, req.Wait = c.Args().Slice(), true
		if _, err := bringUp(c, dir, req, 0); err != nil {
			return err
		}
	}
	out := eventPrinter(c)
	w, err := watch.New(rules, watch.Options{Warn: func(err error) { fmt.Fprintf(c.App.ErrWriter, "warning: %v\n", err) }})
	if err != nil {
		return err
	}
	loop := devloop.New(p.Services, rules, devloop.Options{Dir: dir,
		Running: func(ctx context.Context, service string) ([]int, error) { return runningReplicas(ctx, dir, service) },
		Exec: func(ctx context.Context, service string, index int, spec *agent.ExecSpec) (int, error) {
			return execIn(c, service, index, spec, strings.NewReader(""), c.App.Writer, c.App.ErrWriter)
		}})
	// Changes made during the initial sync are in the watcher's first batches.
	for _, r := range rules {
		if ev, ok := loop.InitialSync(c.Context, r); ok {
			out(ev)
		}
	}
	fmt.Fprintf(c.App.Writer, "Watching %d %s: %s\n", len(names), plural(len(names), "service"), strings.Join(names, ", "))
	// Ctrl-C ends Run; the services keep running.
	return w.Run(c.Context, func(b watch.Batch) { out(loop.Apply(context.WithoutCancel(c.Context), b)) })
}

// watchedServices are the named services (all when none are) that have
// develop.watch; it refuses, one line per problem, when any of their rules
// cannot be followed, before anything starts.
func watchedServices(c *cli.Context, p *project.Project) ([]string, error) {
	names := c.Args().Slice()
	for _, n := range names {
		if _, ok := p.Services[n]; !ok {
			return nil, fmt.Errorf("no such service: %s (the project has: %v)", n, p.ServiceNames())
		}
	}
	if len(names) == 0 {
		names = p.ServiceNames()
	}
	var watched, problems []string
	for _, n := range names {
		svc := p.Services[n]
		if svc.Develop == nil || len(svc.Develop.Watch) == 0 {
			continue
		}
		watched = append(watched, n)
		for _, msg := range append(planner.WatchProblems(svc), p.WatchProblems[n]...) {
			problems = append(problems, fmt.Sprintf("service %q cannot be watched: %s", n, msg))
		}
	}
	if len(problems) > 0 {
		for _, msg := range problems {
			fmt.Fprintf(c.App.ErrWriter, "vmcompose: %s\n", msg)
		}
		return nil, exitCode(1)
	}
	if len(watched) == 0 {
		return nil, fmt.Errorf("watch: none of %s has develop.watch: add a develop.watch rule (path, action, target) to the service to watch", strings.Join(names, ", "))
	}
	slices.Sort(watched)
	return watched, nil
}

// runningReplicas are the replica numbers of service whose VMs run.
func runningReplicas(ctx context.Context, dir, service string) ([]int, error) {
	o, err := observe(ctx, dir)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, in := range o.Instances {
		if in.Service == service && in.State == planner.Running && in.Phase != "exited" {
			out = append(out, in.Number)
		}
	}
	slices.Sort(out)
	return out, nil
}

// eventPrinter prints each batch's event: a line on stdout (failures on
// stderr, also with --quiet), or a JSON object with --progress json.
func eventPrinter(c *cli.Context) func(devloop.Event) {
	if c.String("progress") == "json" {
		enc := json.NewEncoder(c.App.Writer)
		return func(e devloop.Event) { enc.Encode(e) }
	}
	return func(e devloop.Event) {
		var w io.Writer = c.App.Writer
		switch {
		case e.Error != "" || len(e.Skipped) > 0:
			w = c.App.ErrWriter
		case c.Bool("quiet"):
			return
		}
		fmt.Fprintln(w, e.String())
	}
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
