package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/watch"
)

// liveWatch is a watch that follows the project's own files too (its
// compose files, .env or --env-file files, and the services' env_file):
// it holds the project as last loaded and the rules watcher started from
// it (startWatching), and swap replaces them when an edit changes the
// rules.
type liveWatch struct {
	c     *cli.Context
	dir   string
	scope []string // the SERVICE arguments: what the watch covers
	p     *project.Project
	names []string // the watched services (watchScope)
	files []string // configFiles(p)
	out   func(configEvent)

	ctx   context.Context    // run's
	first *watching          // the rules watcher run starts
	stop  context.CancelFunc // ends the running one
	done  chan struct{}      // closed when it ended
}

// watchLive follows wt, the named services' rules begun, and the
// project's files; run follows both until ctx is done.
func watchLive(c *cli.Context, p *project.Project, dir string, names []string, wt *watching) (run func(context.Context) error) {
	lw := &liveWatch{c: c, dir: dir, scope: c.Args().Slice(), p: p, names: names, first: wt, out: configPrinter(c)}
	lw.files = configFiles(p, loadOptions(c))
	return lw.run
}

// recreates counts the recreates a watch has under way (an edit's, a
// rebuild's): their services have no VM for a moment, which foreground up
// must not take for their end.
var recreates atomic.Int32

// recreating runs f, a recreate, counted in recreates.
func recreating(f func() error) error {
	recreates.Add(1)
	defer recreates.Add(-1)
	return f()
}

// run follows the rules and the project's files until ctx is done.
func (lw *liveWatch) run(ctx context.Context) error {
	lw.ctx = ctx
	lw.startRules(lw.first)
	defer lw.stopRules()
	warn := watch.Options{Warn: func(err error) { fmt.Fprintf(lw.c.App.ErrWriter, "warning: %v\n", err) }}
	for first := true; ctx.Err() == nil; first = false {
		fw, err := watch.NewFiles(lw.files, warn)
		if err != nil {
			fmt.Fprintf(lw.c.App.ErrWriter, "warning: not watching the compose files: %v\n", oneLine(err))
			<-ctx.Done()
			break
		}
		// A reload that names other files ends this watcher; the next
		// one follows them.
		fctx, cancel := context.WithCancel(ctx)
		// An edit made while up ran, after the project was loaded, came
		// before the watcher: it is applied now.
		if edited := modifiedSince(lw.files, started); first && len(edited) > 0 && lw.reload(edited) {
			cancel()
		}
		fw.Run(fctx, func(changed []string) {
			if lw.reload(changed) {
				cancel()
			}
		})
		cancel()
	}
	return nil
}

// started is about when the CLI loaded the project, at its start.
var started = time.Now()

// modifiedSince are the files modified after t.
func modifiedSince(files []string, t time.Time) []string {
	var out []string
	for _, f := range files {
		if fi, err := os.Stat(f); err == nil && fi.ModTime().After(t) {
			out = append(out, f)
		}
	}
	return out
}

// startRules runs a rules watcher that beginWatching returned (each runs
// once: it closes its watches when it ends).
func (lw *liveWatch) startRules(wt *watching) {
	ctx, stop := context.WithCancel(lw.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		wt.run(ctx, lw.c)
	}()
	lw.stop, lw.done = stop, done
}

// stopRules ends the rules watcher and waits until it closed its watches
// and finished the batch it was applying.
func (lw *liveWatch) stopRules() {
	if lw.stop != nil {
		lw.stop()
		<-lw.done
		lw.stop = nil
	}
}

// swap replaces the rules watcher with one for p's rules. The new one
// watches, and follows the boots, before the old one stops, so that no
// edit and no boot goes by unseen; the old one stops before the new one
// applies anything, so that no batch goes by rules that are gone. When
// the new one cannot begin, the old one goes on.
func (lw *liveWatch) swap(p *project.Project, names []string) error {
	wt, err := beginWatching(lw.c, p, lw.dir, names)
	if err != nil {
		return err
	}
	lw.stopRules()
	lw.names = names
	lw.startRules(wt)
	return nil
}

// reload applies an edit of the project's files: it loads the project
// again, recreates the running services whose config changed and follows
// the new rules. An edit it cannot apply changes nothing. It says whether
// the project's files are others now.
func (lw *liveWatch) reload(changed []string) (otherFiles bool) {
	what := displayNames(changed)
	p, names, plan, err := lw.load()
	if err != nil {
		lw.out(configEvent{Files: what, Action: "reload", Error: err.Error()})
		return false
	}
	changes := lw.changes(plan)
	// The new rules first: a VM the recreate boots is resynced by them.
	if !sameRules(lw.p, p, lw.names, names) {
		if err := lw.swap(p, names); err != nil {
			// Still by the old rules: the next edit tries again.
			lw.out(configEvent{Files: what, Action: "reload", Error: strings.Join(what, ", ") + ": " + relative(oneLine(err))})
			return false
		}
	}
	lw.recreate(what, changes)
	lw.p = p
	files := configFiles(p, loadOptions(lw.c))
	otherFiles = !slices.Equal(files, lw.files)
	lw.files = files
	return otherFiles
}

// load reads the project as the CLI did and plans it; an error is one line
// that names the file.
func (lw *liveWatch) load() (*project.Project, []string, *planner.Plan, error) {
	p, err := loadProject(lw.c)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s", relative(oneLine(err)))
	}
	file := strings.Join(displayNames(p.ComposeFiles), "+")
	names, problems, err := watchScope(p, lw.scope)
	if len(problems) > 0 {
		err = fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %s", file, relative(oneLine(err)))
	}
	scale, err := parseScale(lw.c.StringSlice("scale"))
	if err != nil {
		return nil, nil, nil, err
	}
	o, err := observe(lw.c.Context, lw.dir)
	if err != nil {
		return nil, nil, nil, err
	}
	desired, err := desiredState(lw.c.Context, p)
	if err != nil {
		return nil, nil, nil, err
	}
	plan, err := planner.Up(desired, o.Observed(), planner.Options{Services: lw.scope, NoDeps: lw.c.Bool("no-deps"), Scale: scale})
	if err == nil {
		err = plan.Blocked()
	}
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%s: %s", file, oneLine(err))
	}
	return p, names, plan, nil
}

// serviceChange is what an edit changed of one service.
type serviceChange struct {
	service string
	fields  []string
	kind    string // "recreate", "stopped" or "new"
}

// changes are the services of plan whose config hash changed, and the
// services new in the file. A service whose VMs are all stopped is left
// so: the user stopped it.
func (lw *liveWatch) changes(plan *planner.Plan) []serviceChange {
	var out []serviceChange
	at := map[string]int{} // a service's place in out
	for _, op := range plan.Ops {
		_, known := lw.p.Services[op.Service]
		var kind string
		switch {
		case op.Kind == planner.Recreate:
			kind = "recreate"
		case op.Kind == planner.Create && !known:
			kind = "new"
		default:
			continue
		}
		i, ok := at[op.Service]
		if !ok {
			if running, _ := runningReplicas(lw.dir, op.Service); kind == "recreate" && len(running) == 0 {
				kind = "stopped"
			}
			i, at[op.Service] = len(out), len(out)
			out = append(out, serviceChange{service: op.Service, kind: kind})
		}
		for _, f := range op.Changed {
			if !slices.Contains(out[i].fields, f) {
				out[i].fields = append(out[i].fields, f)
			}
		}
	}
	return out
}

// recreate says each change and recreates the running services among
// them in one up, as `up -d --wait --no-deps SERVICE...` would.
func (lw *liveWatch) recreate(what []string, changes []serviceChange) {
	var services []string
	for _, ch := range changes {
		lw.out(configEvent{Files: what, Service: ch.service, Action: ch.kind, Changed: ch.fields})
		if ch.kind == "recreate" {
			services = append(services, ch.service)
		}
	}
	if len(changes) == 0 {
		lw.out(configEvent{Files: what, Action: "reload"})
	}
	if len(services) == 0 {
		return
	}
	req, err := request(lw.c)
	if err == nil {
		req.Scale, err = parseScale(lw.c.StringSlice("scale"))
	}
	if err == nil {
		req.Services, req.NoDeps, req.Wait = services, true, true
		err = recreating(func() error { _, err := bringUp(lw.c, lw.dir, req, 0); return err })
	}
	if err != nil && lw.ctx.Err() == nil { // Ctrl-C cut it short: nothing to say
		for _, s := range services {
			lw.out(configEvent{Files: what, Service: s, Action: "recreate", Error: oneLine(err)})
		}
	}
}

// sameRules is whether the watched services and their develop sections
// (and so their watch.Rules and triggers) are the same in a and b.
func sameRules(a, b *project.Project, an, bn []string) bool {
	if !slices.Equal(an, bn) {
		return false
	}
	for _, n := range an {
		if !reflect.DeepEqual(a.Services[n].Develop, b.Services[n].Develop) ||
			!reflect.DeepEqual(watch.Rules(a.Services[n]), watch.Rules(b.Services[n])) {
			return false
		}
	}
	return true
}

// configFiles are the files a load of p with opts reads: its compose files,
// the env files (--env-file, or the project directory's .env, there or
// not yet), and its services' env_file, sorted.
func configFiles(p *project.Project, opts project.Options) []string {
	files := slices.Clone(p.ComposeFiles)
	envFiles := opts.EnvFiles
	if len(envFiles) == 0 {
		envFiles = []string{filepath.Join(p.WorkingDir, ".env")}
	}
	wd, _ := os.Getwd()
	for _, f := range envFiles {
		if !filepath.IsAbs(f) {
			f = filepath.Join(wd, f)
		}
		files = append(files, f)
	}
	for _, svc := range p.Services {
		for _, ef := range svc.EnvFiles {
			files = append(files, ef.Path)
		}
	}
	files = slices.DeleteFunc(files, func(f string) bool { return !filepath.IsAbs(f) }) // "-": stdin
	slices.Sort(files)
	return slices.Compact(files)
}

// configEvent is what an edit of the project's files did to a service, or
// to the whole project (without Service).
type configEvent struct {
	Files   []string `json:"config"`
	Service string   `json:"service,omitempty"`
	// Action is "recreate", "stopped" (changed, but the user stopped it),
	// "new" (not started: up starts it) or "reload" (nothing to recreate,
	// or, with Error, an edit refused).
	Action  string   `json:"action"`
	Changed []string `json:"changed,omitempty"`
	Error   string   `json:"error,omitempty"`
}

func (e configEvent) String() string {
	head := strings.Join(e.Files, ", ") + " changed"
	if e.Service != "" {
		head = e.Service + ": " + head
	}
	fields := ""
	if len(e.Changed) > 0 {
		fields = " (" + strings.Join(e.Changed, ", ") + ")"
	}
	switch {
	case e.Error != "" && e.Service == "":
		return "vmcompose: " + e.Error + ": the services keep running as they were"
	case e.Error != "":
		return "vmcompose: " + head + ": recreating: " + e.Error
	case e.Action == "recreate":
		return head + ": recreating" + fields
	case e.Action == "stopped":
		return head + ": not recreated, it is stopped" + fields
	case e.Action == "new":
		return head + ": new service, not started: run vmcompose up"
	}
	return head + ": no service to recreate"
}

// configPrinter prints an edit's events as eventPrinter prints a batch's.
func configPrinter(c *cli.Context) func(configEvent) {
	enc := json.NewEncoder(c.App.Writer)
	return func(e configEvent) {
		switch {
		case e.Error == "" && c.Bool("quiet"):
		case c.String("progress") == "json":
			enc.Encode(e)
		case e.Error != "":
			fmt.Fprintln(c.App.ErrWriter, e.String())
		default:
			fmt.Fprintln(c.App.Writer, e.String())
		}
	}
}

// displayNames are files as the user named them: relative to the working
// directory when under it.
func displayNames(files []string) []string {
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = relative(f)
	}
	return out
}

// relative replaces the working directory in s by nothing, so that paths
// under it read as the user typed them.
func relative(s string) string {
	wd, err := os.Getwd()
	if err != nil || wd == "/" {
		return s
	}
	return strings.ReplaceAll(s, wd+string(filepath.Separator), "")
}
