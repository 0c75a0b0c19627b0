package main

import (
	"context"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/reconcile"
	"github.com/vmcompose/vmcompose/supervisor"
)

func downCommand() *cli.Command {
	return &cli.Command{
		Name:      "down",
		Usage:     "stop and remove the services' VMs",
		ArgsUsage: "[SERVICE...]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "volumes", Aliases: []string{"v"}, Usage: "remove the project's named volumes too"},
			&cli.BoolFlag{Name: "remove-orphans", Usage: "remove VMs of services no longer in the compose file"},
			&cli.IntFlag{Name: "timeout", Aliases: []string{"t"}, Value: -1, DefaultText: "its stop_grace_period", Usage: "`SECONDS` to wait for a service to stop"},
		},
		Action: runDown,
	}
}

func runDown(c *cli.Context) error {
	p, dir, err := projectState(c)
	if err != nil {
		return err
	}
	if err := downProject(c, p, dir); err != nil {
		return err
	}
	if c.Args().Len() > 0 {
		return nil
	}
	// The builder VM goes too; its cache volume stays (builder prune).
	return downBuilder(c.Context, p.Name, false, printEvent(c))
}

func downProject(c *cli.Context, p *project.Project, dir string) error {
	sup, err := connect(c.Context, dir, false)
	if err != nil {
		return err
	}
	if sup == nil {
		o, err := observe(c.Context, dir)
		if err != nil {
			return err
		}
		if len(o.Instances) == 0 {
			// Nothing was ever started, or down already ran; the
			// volumes outlive both.
			if c.Bool("volumes") && c.Args().Len() == 0 {
				return removeVolumes(c, p, dir)
			}
			return nil
		}
		if sup, err = connect(c.Context, dir, true); err != nil {
			return err
		}
	}
	req, err := request(c)
	if err != nil {
		return err
	}
	req.Services = c.Args().Slice()
	req.RemoveOrphans, req.Volumes, req.Timeout = c.Bool("remove-orphans"), c.Bool("volumes"), c.Int("timeout")
	if err := sup.call(c.Context, "/down", req, printEvent(c)); err != nil {
		return err
	}
	if len(req.Services) == 0 {
		awaitSupervisorExit(c.Context, dir)
	}
	return nil
}

// awaitSupervisorExit waits for the supervisor of dir to exit, which it
// does once nothing is left, so that the next command finds a clean state
// dir.
func awaitSupervisorExit(ctx context.Context, dir string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if _, err := os.Stat(supervisor.SocketPath(dir)); err != nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// removeVolumes removes the project's volumes when no supervisor runs,
// saying what it did as the supervisor does.
func removeVolumes(c *cli.Context, p *project.Project, dir string) error {
	lines, err := reconcile.RemoveProjectVolumes(p, dir)
	if emit := printEvent(c); emit != nil {
		for _, l := range lines {
			emit(supervisor.Event{Message: l})
		}
	}
	return err
}
