package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/reconcile"
)

func planCommand() *cli.Command {
	return &cli.Command{
		Name:      "plan",
		Usage:     "show what up (or down) would do, and why, without doing it",
		ArgsUsage: "[SERVICE...]",
		Flags: []cli.Flag{
			formatFlag("text", "json"),
			&cli.BoolFlag{Name: "down", Usage: "show the teardown plan"},
			&cli.BoolFlag{Name: "no-deps", Usage: "don't include the dependencies of the named services"},
			&cli.BoolFlag{Name: "force-recreate", Usage: "plan to recreate the VMs of the named services (all when none are named), changed or not"},
			&cli.BoolFlag{Name: "always-recreate-deps", Usage: "with --force-recreate, the dependencies of the named services too"},
			&cli.BoolFlag{Name: "no-recreate", Usage: "keep existing VMs even when their config changed"},
			&cli.BoolFlag{Name: "remove-orphans", Usage: "remove VMs of services no longer in the compose file"},
			&cli.StringSliceFlag{Name: "scale", Usage: "run `SERVICE=NUM` replicas of a service"},
		},
		Action: runPlan,
	}
}

func runPlan(c *cli.Context) error {
	format, err := checkFormat(c, "text", "json")
	if err != nil {
		return err
	}
	scale, err := parseScale(c.StringSlice("scale"))
	if err != nil {
		return err
	}
	p, err := loadProject(c)
	if err != nil {
		return err
	}
	dir, err := reconcile.StateDir(p.Name)
	if err != nil {
		return err
	}
	// The state record checked against the VMs that exist and run.
	o, err := observe(c.Context, dir)
	if err != nil {
		return err
	}
	observed := o.Observed()
	desired, err := desiredState(c.Context, p)
	if err != nil {
		return err
	}
	var plan *planner.Plan
	if c.Bool("down") {
		plan, err = planner.Down(desired, observed, planner.DownOptions{
			Services:      c.Args().Slice(),
			RemoveOrphans: c.Bool("remove-orphans"),
		})
	} else {
		plan, err = planner.Up(desired, observed, planner.Options{
			Services:           c.Args().Slice(),
			NoDeps:             c.Bool("no-deps"),
			ForceRecreate:      c.Bool("force-recreate"),
			AlwaysRecreateDeps: c.Bool("always-recreate-deps"),
			NoRecreate:         c.Bool("no-recreate"),
			RemoveOrphans:      c.Bool("remove-orphans"),
			Scale:              scale,
		})
	}
	if err != nil {
		return err
	}
	if !c.Bool("down") {
		blocked, _ := planner.Problems(desired)
		plan.Warnings = append(plan.Warnings, buildNotes(p, c.Args().Slice(), blocked)...)
	}
	if format == "json" {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(plan)
	}
	_, err = fmt.Fprint(c.App.Writer, plan.String())
	return err
}

// desiredState is what up would plan p with, as far as the CLI can tell:
// the digests are those of the images already pulled.
func desiredState(ctx context.Context, p *project.Project) (planner.Desired, error) {
	desired := planner.Desired{Project: p.Project, Problems: p.Problems, SharedVolumes: reconcile.SharedVolumes(p)}
	if store, err := openStore(); err == nil {
		svcs := maps.Clone(p.Services)
		maps.Copy(svcs, p.DisabledServices)
		desired.Digests = reconcile.LocalDigests(ctx, store, p.Name, svcs)
	}
	var err error
	desired.Contents, err = storeContentDigests(p)
	return desired, err
}

// parseScale reads --scale SERVICE=NUM flags.
func parseScale(flags []string) (map[string]int, error) {
	scale := map[string]int{}
	for _, f := range flags {
		name, num, ok := strings.Cut(f, "=")
		n, err := strconv.Atoi(num)
		if !ok || name == "" || err != nil || n < 0 {
			return nil, fmt.Errorf("--scale: %q is not SERVICE=NUM with NUM 0 or more", f)
		}
		scale[name] = n
	}
	return scale, nil
}
