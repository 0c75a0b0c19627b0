package main

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/reconcile"
)

func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "parse, resolve and render the compose file in canonical form",
		Flags: []cli.Flag{
			formatFlag("yaml", "json"),
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "only validate the configuration"},
			&cli.BoolFlag{Name: "services", Usage: "print the service names, one per line"},
			&cli.BoolFlag{Name: "volumes", Usage: "print the volume names, one per line"},
			&cli.BoolFlag{Name: "profiles", Usage: "print the profile names, one per line"},
			&cli.BoolFlag{Name: "images", Usage: "print the image names, one per line"},
			&cli.StringFlag{Name: "hash", Usage: `print the config hash of the named services (comma-separated, "*" for all) as "service hash" lines`},
		},
		Action: runConfig,
	}
}

func runConfig(c *cli.Context) error {
	format, err := checkFormat(c, "yaml", "json")
	if err != nil {
		return err
	}
	p, err := loadProject(c)
	if err != nil {
		return err
	}
	warnProblems(c, p)
	out := c.App.Writer
	lines := func(names []string) error {
		for _, n := range names {
			if _, err := fmt.Fprintln(out, n); err != nil {
				return err
			}
		}
		return nil
	}
	switch {
	case c.Bool("quiet"):
		return nil
	case c.Bool("services"):
		return lines(p.ServiceNames())
	case c.Bool("volumes"):
		return lines(p.VolumeNames())
	case c.Bool("profiles"):
		return lines(p.AllServices().GetProfiles())
	case c.Bool("images"):
		var images []string
		for _, name := range p.ServiceNames() {
			// A build: service's image is named for it, as compose prints.
			if img := planner.ImageName(p.Name, p.Services[name]); img != "" {
				images = append(images, img)
			}
		}
		slices.Sort(images)
		return lines(slices.Compact(images))
	case c.IsSet("hash"):
		names := p.ServiceNames()
		if sel := c.String("hash"); sel != "*" {
			names = strings.Split(sel, ",")
		}
		contents, err := storeContentDigests(p)
		if err != nil {
			return err
		}
		for _, name := range names {
			svc, ok := p.Services[name]
			if !ok {
				return fmt.Errorf("--hash: no such service: %s (the project has: %s)", name, strings.Join(slices.Sorted(maps.Keys(p.Services)), ", "))
			}
			f, err := planner.InstanceFields(svc, "", contents, nil)
			if err != nil {
				return err
			}
			if _, err := fmt.Fprintf(out, "%s %s\n", name, f.Hash()); err != nil {
				return err
			}
		}
		return nil
	}
	var b []byte
	if format == "json" {
		b, err = p.MarshalJSON()
		b = append(b, '\n')
	} else {
		b, err = p.MarshalYAML()
	}
	if err != nil {
		return fmt.Errorf("rendering the project: %w", err)
	}
	_, err = out.Write(b)
	return err
}

// warnProblems says on stderr what up would refuse or run otherwise than
// written: config prints the project as docker compose does, but must not
// let it pass in silence.
func warnProblems(c *cli.Context, p *project.Project) {
	problems, warnings := planner.Problems(planner.Desired{Project: p.Project, Problems: p.Problems})
	for _, name := range slices.Sorted(maps.Keys(problems)) {
		for _, msg := range problems[name] {
			fmt.Fprintf(c.App.ErrWriter, "warning: service %q cannot run: %s\n", name, msg)
		}
	}
	for _, w := range warnings {
		fmt.Fprintf(c.App.ErrWriter, "warning: %s\n", w)
	}
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		for _, msg := range append(planner.WatchProblems(p.Services[name]), p.WatchProblems[name]...) {
			fmt.Fprintf(c.App.ErrWriter, "warning: service %q cannot be watched: %s\n", name, msg)
		}
	}
}

// storeContentDigests are the keyed digests of the project's secrets and
// configs, with the store's key, as up records them; none when there is
// no store.
func storeContentDigests(p *project.Project) (map[string]string, error) {
	store, err := openStore()
	if err != nil {
		return nil, nil
	}
	return reconcile.StoreContentDigests(p, store.Dir())
}
