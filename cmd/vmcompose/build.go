package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/urfave/cli/v2"

	"github.com/vmcompose/vmcompose/build"
	"github.com/vmcompose/vmcompose/oci"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/reconcile"
	"github.com/vmcompose/vmcompose/supervisor"
)

func buildCommand() *cli.Command {
	return &cli.Command{
		Name:      "build",
		Usage:     "build the images of the services with build: (all when none are named) in the project's builder VM",
		ArgsUsage: "[SERVICE...]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "no-cache", Usage: "build every step again, not from the builder's cache"},
			&cli.BoolFlag{Name: "pull", Usage: "pull the base images again"},
			&cli.StringSliceFlag{Name: "build-arg", Usage: "set the build argument `KEY=VALUE` (over build.args)"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print no build output, errors only"},
		},
		Action: runBuild,
	}
}

// buildOptions are the flags of build that `up --build` shares.
type buildOptions struct {
	noCache, pull, quiet bool
	args                 map[string]string
}

func runBuild(c *cli.Context) error {
	p, err := loadProject(c)
	if err != nil {
		return err
	}
	names := c.Args().Slice()
	if len(names) == 0 {
		names = buildable(p.Services)
	}
	args, err := parseBuildArgs(c.StringSlice("build-arg"))
	if err != nil {
		return err
	}
	opts := buildOptions{noCache: c.Bool("no-cache"), pull: c.Bool("pull"), quiet: c.Bool("quiet"), args: args}
	for _, n := range names {
		svc, ok := p.AllServices()[n]
		switch {
		case !ok:
			return fmt.Errorf("no such service: %s", n)
		case svc.Build == nil:
			return fmt.Errorf("service %q has no build: section: nothing to build (its image is pulled)", n)
		}
	}
	return buildServices(c, p, names, opts)
}

// buildable are the names of the services with build:, sorted.
func buildable(services types.Services) []string {
	var out []string
	for _, n := range slices.Sorted(maps.Keys(services)) {
		if services[n].Build != nil {
			out = append(out, n)
		}
	}
	return out
}

func parseBuildArgs(list []string) (map[string]string, error) {
	out := map[string]string{}
	for _, a := range list {
		k, v, ok := strings.Cut(a, "=")
		if !ok {
			// As docker: a bare KEY takes its value from the environment.
			if v, ok = os.LookupEnv(k); !ok {
				continue
			}
		}
		if k == "" {
			return nil, fmt.Errorf("--build-arg %q: want KEY=VALUE", a)
		}
		out[k] = v
	}
	return out, nil
}

// buildServices builds the named services' images in the project's
// builder VM, refusing first what their build: asks that vmcompose
// cannot do.
func buildServices(c *cli.Context, p *project.Project, names []string, opts buildOptions) error {
	all := p.AllServices()
	var specs []build.Spec
	prog := newProgress(c)
	if opts.quiet {
		prog = quietProgress{}
	}
	defer prog.Close()
	for _, n := range names {
		svc := all[n]
		if problems := append(planner.ServiceProblems(p.Project, svc), p.Problems[n]...); len(problems) > 0 {
			return fmt.Errorf("service %q: %s", n, problems[0])
		}
		svc.Image = planner.ImageName(p.Name, svc)
		specs = append(specs, build.Spec{Service: svc, NoCache: opts.noCache, Pull: opts.pull, Args: opts.args,
			Out: func(line string) { prog.Build(n, line) }})
	}
	b, err := newBuilder(c, p, prog)
	if err != nil {
		return err
	}
	results, err := b.Build(c.Context, specs)
	for _, r := range results {
		prog.Step(r.Service, builtLine(r))
	}
	return err
}

// newBuilder is the project's builder: its VM runs under a supervisor of
// its own, in the state dir build.StateName names.
func newBuilder(c *cli.Context, p *project.Project, prog progress) (*build.Builder, error) {
	store, err := openStore()
	if err != nil {
		return nil, err
	}
	dir, err := reconcile.StateDir(build.StateName(p.Name))
	if err != nil {
		return nil, err
	}
	return &build.Builder{
		Project: p.Project, Dir: dir, Store: store,
		Up:     func(ctx context.Context, dir, file string) error { return upBuilder(ctx, dir, file) },
		Report: func(s string) { prog.Step("builder", s) },
	}, nil
}

// upBuilder converges the builder project of compose file file, as `up
// --wait` does.
func upBuilder(ctx context.Context, dir, file string) error {
	sup, err := connect(ctx, dir, true)
	if err != nil {
		return err
	}
	req := &supervisor.Request{Load: project.Options{Files: []string{file}, Env: os.Environ()}, Wait: true, Timeout: -1}
	return sup.call(ctx, "/up", req, nil)
}

// downBuilder removes the builder VM of project (when it has one) and,
// with volumes, its cache volume.
func downBuilder(ctx context.Context, projectName string, volumes bool, onEvent func(supervisor.Event)) error {
	dir, err := reconcile.StateDir(build.StateName(projectName))
	if err != nil {
		return err
	}
	file := filepath.Join(dir, "compose.yaml")
	if _, err := os.Stat(file); err != nil {
		return nil // never built
	}
	sup, err := connect(ctx, dir, volumes)
	if err != nil || sup == nil {
		return err
	}
	req := &supervisor.Request{Load: project.Options{Files: []string{file}, Env: os.Environ()}, Volumes: volumes, Timeout: -1}
	if err := sup.call(ctx, "/down", req, onEvent); err != nil {
		return fmt.Errorf("the builder of project %s: %w", projectName, err)
	}
	awaitSupervisorExit(ctx, dir)
	return nil
}

func builderCommand() *cli.Command {
	return &cli.Command{
		Name:  "builder",
		Usage: "manage the project's builder VM and its build cache",
		Subcommands: []*cli.Command{
			{
				Name:   "prune",
				Usage:  "remove the builder VM and its build cache (layers, contexts and bases sent to it); the next build runs every step",
				Action: runBuilderPrune,
			},
			{
				Name:   "stop",
				Usage:  "remove the builder VM, keeping its build cache",
				Action: func(c *cli.Context) error { return runBuilderDown(c, false) },
			},
		},
	}
}

func runBuilderPrune(c *cli.Context) error { return runBuilderDown(c, true) }

func runBuilderDown(c *cli.Context, cache bool) error {
	p, err := loadProject(c)
	if err != nil {
		return err
	}
	if err := downBuilder(c.Context, p.Name, cache, printEvent(c)); err != nil {
		return err
	}
	if !cache {
		return nil
	}
	dir, err := reconcile.StateDir(build.StateName(p.Name))
	if err != nil {
		return err
	}
	// What the host knows was sent went with the volume; and the next
	// build builds, as after docker's builder prune.
	for _, sub := range []string{"ctx", "built"} {
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			return err
		}
	}
	return nil
}

// ensureBuilt builds, before an up or a run, the images of the named
// services and their dependencies (deps) that have build: and whose image
// is not in the store; with force (--build) all of them, and those with
// pull_policy: build every time. As in compose, a changed context does not
// rebuild an image that exists (plan says it is older than its context).
func ensureBuilt(c *cli.Context, p *project.Project, names []string, deps, force bool) error {
	store, err := openStore()
	if err != nil {
		return err
	}
	all := p.AllServices()
	if len(names) == 0 {
		names = slices.Collect(maps.Keys(p.Services))
	}
	var todo []string
	for _, n := range serviceClosure(all, names, deps) {
		svc := all[n]
		if svc.Build == nil {
			continue
		}
		_, err := store.Image(planner.ImageName(p.Name, svc), oci.WithPlatform(svc.Platform))
		if force || svc.PullPolicy == types.PullPolicyBuild || err != nil {
			todo = append(todo, n)
		}
	}
	if len(todo) == 0 {
		return nil
	}
	return buildServices(c, p, todo, buildOptions{})
}

// serviceClosure is names and, with
// deps, what they depend on, transitively; sorted.
func serviceClosure(all types.Services, names []string, deps bool) []string {
	seen := map[string]bool{}
	var visit func(string)
	visit = func(n string) {
		if seen[n] {
			return
		}
		seen[n] = true
		if deps {
			for d := range all[n].DependsOn {
				visit(d)
			}
		}
	}
	for _, n := range names {
		visit(n)
	}
	return slices.Sorted(maps.Keys(seen))
}

func builtLine(r build.Result) string {
	if r.Cached {
		return fmt.Sprintf("image %s (%s) is up to date", r.Image.Ref, shortDigest(r.Image.Digest.String()))
	}
	return fmt.Sprintf("built %s (%s) in %.1fs", r.Image.Ref, shortDigest(r.Image.Digest.String()), r.Duration.Seconds())
}

// buildNotes are what plan says of the named services' (all when none)
// images that up would build, or would not although they are older than
// their context: as in compose, a plain up builds only a missing image.
// Services up would refuse (blocked) are left out: their problems say it.
func buildNotes(p *project.Project, names []string, blocked map[string][]string) []string {
	store, err := openStore()
	if err != nil {
		return nil
	}
	dir, err := reconcile.StateDir(build.StateName(p.Name))
	if err != nil {
		return nil
	}
	if len(names) == 0 {
		names = slices.Collect(maps.Keys(p.Services))
	}
	var out []string
	for _, n := range serviceClosure(p.AllServices(), names, true) {
		svc := p.AllServices()[n]
		if svc.Build == nil || len(blocked[n]) > 0 {
			continue
		}
		ref := planner.ImageName(p.Name, svc)
		img, err := store.Image(ref, oci.WithPlatform(svc.Platform))
		if err != nil {
			out = append(out, fmt.Sprintf("service %q: image %s is not built yet: up builds it", n, ref))
			continue
		}
		if older := build.OlderThanContext(dir, svc, img); older != "" {
			out = append(out, fmt.Sprintf("service %q: image %s is older than its build context (%s): `vmcompose build %s` or `up --build` builds it again", n, ref, older, n))
		}
	}
	return out
}
