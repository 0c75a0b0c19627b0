package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vmcompose/vmcompose/devloop"
	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/oci"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/reconcile"
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
			&cli.BoolFlag{Name: "prune", Value: true, Usage: "after a rebuild, free the images nothing refers to any more (--prune=false keeps them)"},
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
	wt, err := beginWatching(c, p, dir, names)
	if err != nil {
		return err
	}
	if !c.Bool("no-up") {
		req, err := request(c)
		if err != nil {
			return err
		}
		req.Services, req.Wait = c.Args().Slice(), true
		if err := ensureBuilt(c, p, req.Services, true, false); err != nil {
			return err
		}
		if _, err := bringUp(c, dir, req, 0); err != nil {
			return err
		}
	}
	// Ctrl-C ends it; the services keep running.
	return watchLive(c, p, dir, names, wt)(c.Context)
}

// newLoop is the dev loop of the named services' rules.
func newLoop(c *cli.Context, p *project.Project, dir string, names []string) *devloop.Loop {
	rules := watchRules(p, names)
	return devloop.New(p.Services, rules, devloop.Options{Dir: dir,
		Running: func(_ context.Context, service string) ([]int, error) { return runningReplicas(dir, service) },
		Exec: func(ctx context.Context, service string, index int, spec *agent.ExecSpec) (int, error) {
			return execIn(c, service, index, spec, strings.NewReader(""), c.App.Writer, c.App.ErrWriter)
		},
		Rebuild: func(ctx context.Context, service string) (string, error) { return rebuild(c, p, dir, service) }})
}

func watchRules(p *project.Project, names []string) []watch.Rule {
	var rules []watch.Rule
	for _, name := range names {
		rules = append(rules, watch.Rules(p.Services[name])...)
	}
	return rules
}

// followAttachTimeout bounds the wait for the supervisor to take the
// watch session.
const followAttachTimeout = 10 * time.Second

// followBoots attaches loop to the project's supervisor (started when
// none runs) until ctx ends, so that every replica of the named services
// that boots from now on gets its synced paths before its process starts
// (devloop.Follow); it returns once that holds.
func followBoots(ctx context.Context, c *cli.Context, dir string, loop *devloop.Loop, names []string) error {
	if _, err := connect(ctx, dir, true); err != nil {
		return err
	}
	ready := make(chan struct{})
	var once sync.Once
	go loop.Follow(ctx, names, func() { once.Do(func() { close(ready) }) }, eventPrinter(c))
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(followAttachTimeout):
		return fmt.Errorf("watch: the supervisor did not take the watch session within %s: see %s", followAttachTimeout, filepath.Join(dir, "supervisor.log"))
	}
}

// watching is a watch of a set of rules, begun: its watcher follows the
// host paths from the start, so that nothing changed while the services
// come up is missed, and its loop resyncs the VMs that boot. It ends
// with its run (or close, when it never runs).
type watching struct {
	names []string
	loop  *devloop.Loop
	w     *watch.Watcher
	end   context.CancelFunc // ends the follow session
}

// beginWatching starts watching the named services' paths and follows
// their boots (followBoots), before they are brought up.
func beginWatching(c *cli.Context, p *project.Project, dir string, names []string) (*watching, error) {
	loop := newLoop(c, p, dir, names)
	w, err := watch.New(loop.Rules(), watch.Options{Warn: func(err error) { fmt.Fprintf(c.App.ErrWriter, "warning: %v\n", err) }})
	if err != nil {
		return nil, err
	}
	ctx, end := context.WithCancel(c.Context)
	if err := followBoots(ctx, c, dir, loop, names); err != nil {
		end()
		w.Close()
		return nil, err
	}
	return &watching{names: names, loop: loop, w: w, end: end}, nil
}

// close ends a watching that will not run.
func (wt *watching) close() {
	wt.end()
	wt.w.Close()
}

// run runs the rules' initial_sync, says it is watching, and applies the
// batches until ctx is done. Changes made since beginWatching,
// the initial sync's time included, are in the first batches.
func (wt *watching) run(ctx context.Context, c *cli.Context) error {
	defer wt.end()
	out := eventPrinter(c)
	for _, r := range wt.loop.Rules() {
		if ev, ok := wt.loop.InitialSync(ctx, r); ok {
			out(ev)
		}
	}
	printWatching(c, wt.names)
	return wt.w.Run(ctx, func(b watch.Batch) { out(wt.loop.Apply(context.WithoutCancel(ctx), b)) })
}

// watchedServices are the named services (all when none are) that have
// develop.watch; it refuses, one line per problem, when any of their rules
// cannot be followed, before anything starts.
func watchedServices(c *cli.Context, p *project.Project) ([]string, error) {
	watched, problems, err := watchScope(p, c.Args().Slice())
	if len(problems) > 0 {
		for _, msg := range problems {
			fmt.Fprintf(c.App.ErrWriter, "vmcompose: %s\n", msg)
		}
		return nil, exitCode(1)
	}
	return watched, err
}

// watchScope is what watchedServices decides, said rather than printed:
// the sorted services of names (all when empty) with develop.watch, or
// why they cannot be watched.
func watchScope(p *project.Project, names []string) (watched, problems []string, err error) {
	for _, n := range names {
		if _, ok := p.Services[n]; !ok {
			return nil, nil, fmt.Errorf("no such service: %s (the project has: %v)", n, p.ServiceNames())
		}
	}
	if len(names) == 0 {
		names = p.ServiceNames()
	}
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
		return nil, problems, nil
	}
	if len(watched) == 0 {
		return nil, nil, fmt.Errorf("watch: none of %s has develop.watch: add a develop.watch rule (path, action, target) to the service to watch", strings.Join(names, ", "))
	}
	slices.Sort(watched)
	return watched, nil, nil
}

// rebuild is watch's rebuild of a service: its image built again (with
// build:) or pulled again (pull always), and its VMs recreated with it, as
// `build SERVICE && up -d --wait --force-recreate --no-deps SERVICE` would;
// then,
// unless --prune=false, what the store no longer refers to is freed, as
// docker compose prunes the dangling images. note says what was freed.
func rebuild(c *cli.Context, p *project.Project, dir, service string) (note string, err error) {
	if err := renewImage(c, p, service); err != nil {
		return "", err
	}
	req, err := request(c)
	if err != nil {
		return "", err
	}
	req.Services, req.ForceRecreate, req.NoDeps, req.Wait = []string{service}, true, true, true
	if err := recreating(func() error { _, err := bringUp(c, dir, req, 0); return err }); err != nil {
		return "", err
	}
	// up --watch has no --prune: it prunes, as watch does by default.
	if c.IsSet("prune") && !c.Bool("prune") {
		return "", nil
	}
	rep, err := pruneImages(c.Context)
	if err != nil {
		return "", fmt.Errorf("recreated, but pruning: %w", err)
	}
	if rep.Blobs == 0 && len(rep.Rootfs) == 0 {
		return "", nil
	}
	return "pruned: " + pruneSummary(rep), nil
}

// renewImage builds a service's image again, or pulls it again when the
// service has no build:.
func renewImage(c *cli.Context, p *project.Project, service string) error {
	if p.Services[service].Build != nil {
		return buildServices(c, p, []string{service}, buildOptions{})
	}
	targets, _, err := pullTargets(p.Services, []string{service}, oci.PullAlways, false)
	if err != nil {
		return err
	}
	store, err := openStore()
	if err != nil {
		return err
	}
	for _, t := range targets {
		if err := pullAndPrepare(c.Context, store, t, quietProgress{}, nil); err != nil {
			return err
		}
	}
	return nil
}

// runningReplicas are the replica numbers of service whose VMs run, as
// the supervisor last recorded them: asking the VM driver costs about
// 90 ms a batch, and a sync to a VM that just stopped says so anyway.
func runningReplicas(dir, service string) ([]int, error) {
	st, err := reconcile.ReadState(dir)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, in := range st.Instances {
		if in.Service == service && in.State == planner.Running && in.Phase != "exited" {
			out = append(out, in.Number)
		}
	}
	slices.Sort(out)
	return out, nil
}

// eventPrinter prints each batch's event: a line on stdout (failures on
// stderr), or a JSON object on stdout with --progress json; --quiet
// prints the failures only. Its printers may be called at once.
func eventPrinter(c *cli.Context) func(devloop.Event) {
	enc := json.NewEncoder(c.App.Writer)
	return func(e devloop.Event) {
		printMu.Lock()
		defer printMu.Unlock()
		failed := e.Error != "" || len(e.Skipped) > 0
		switch {
		case !failed && c.Bool("quiet"):
		case c.String("progress") == "json":
			enc.Encode(e)
		case failed:
			fmt.Fprintln(c.App.ErrWriter, e.String())
		default:
			fmt.Fprintln(c.App.Writer, e.String())
		}
	}
}

// printWatching says watching began: the services' names, or with
// --progress json the object {"watching": [names]}.
func printWatching(c *cli.Context, names []string) {
	printMu.Lock()
	defer printMu.Unlock()
	if c.String("progress") == "json" {
		json.NewEncoder(c.App.Writer).Encode(struct {
			Watching []string `json:"watching"`
		}{names})
		return
	}
	fmt.Fprintf(c.App.Writer, "Watching %d %s: %s\n", len(names), plural(len(names), "service"), strings.Join(names, ", "))
}

// printMu keeps the lines of the watch's printers whole.
var printMu sync.Mutex

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
