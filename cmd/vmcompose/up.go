package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vmcompose/vmcompose/reconcile"
	"github.com/vmcompose/vmcompose/supervisor"
)

func upCommand() *cli.Command {
	return &cli.Command{
		Name:      "up",
		Usage:     "create and start the services' VMs, converging them to the compose file",
		ArgsUsage: "[SERVICE...]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "run in the background"},
			&cli.BoolFlag{Name: "wait", Usage: "wait until the services are running or healthy (implies --detach)"},
			&cli.IntFlag{Name: "wait-timeout", Usage: "give up waiting after `SECONDS`"},
			&cli.BoolFlag{Name: "no-deps", Usage: "don't start the dependencies of the named services"},
			&cli.BoolFlag{Name: "force-recreate", Usage: "recreate the VMs of the named services (all when none are named), changed or not"},
			&cli.BoolFlag{Name: "always-recreate-deps", Usage: "with --force-recreate, recreate the dependencies of the named services too"},
			&cli.BoolFlag{Name: "no-recreate", Usage: "keep existing VMs even when their config changed"},
			&cli.BoolFlag{Name: "remove-orphans", Usage: "remove VMs of services no longer in the compose file"},
			&cli.BoolFlag{Name: "abort-on-container-exit", Usage: "stop every service when one exits (foreground)"},
			&cli.StringFlag{Name: "exit-code-from", Usage: "exit with the exit code of `SERVICE` (implies --abort-on-container-exit)"},
			&cli.StringSliceFlag{Name: "scale", Usage: "run `SERVICE=NUM` replicas of a service"},
			&cli.IntFlag{Name: "timeout", Aliases: []string{"t"}, Value: -1, DefaultText: "its stop_grace_period", Usage: "`SECONDS` to wait for a service to stop"},
			&cli.BoolFlag{Name: "build", Usage: "build the images of the services with build: before starting them"},
			&cli.BoolFlag{Name: "no-build", Usage: "don't build an image that is missing (up fails instead)"},
			&cli.BoolFlag{Name: "watch", Aliases: []string{"w"}, Usage: "watch the services' develop.watch paths while they run in the foreground (as watch does)"},
		},
		Action: runUp,
	}
}

func runUp(c *cli.Context) error {
	scale, err := parseScale(c.StringSlice("scale"))
	if err != nil {
		return err
	}
	detach := c.Bool("detach") || c.Bool("wait")
	abort := c.Bool("abort-on-container-exit") || c.String("exit-code-from") != ""
	if detach && abort {
		return fmt.Errorf("--abort-on-container-exit and --exit-code-from need the foreground: drop --detach/--wait")
	}
	if detach && c.Bool("watch") {
		return fmt.Errorf("--watch needs the foreground: drop --detach/--wait, or run `vmcompose up -d && vmcompose watch`")
	}
	p, dir, err := projectState(c)
	if err != nil {
		return err
	}
	if from := c.String("exit-code-from"); from != "" {
		if _, ok := p.Services[from]; !ok {
			return fmt.Errorf("--exit-code-from: no such service: %s", from)
		}
	}
	var watched []string
	if c.Bool("watch") {
		if watched, err = watchedServices(c, p); err != nil {
			return err
		}
	}
	req, err := request(c)
	if err != nil {
		return err
	}
	req.Services = c.Args().Slice()
	req.NoDeps, req.ForceRecreate, req.NoRecreate = c.Bool("no-deps"), c.Bool("force-recreate"), c.Bool("no-recreate")
	req.AlwaysRecreateDeps = c.Bool("always-recreate-deps")
	req.RemoveOrphans, req.Scale, req.Wait, req.Timeout = c.Bool("remove-orphans"), scale, c.Bool("wait"), c.Int("timeout")

	if c.Bool("build") && c.Bool("no-build") {
		return fmt.Errorf("--build and --no-build: choose one")
	}
	if !c.Bool("no-build") {
		if err := ensureBuilt(c, p, req.Services, !req.NoDeps, c.Bool("build")); err != nil {
			return err
		}
	}
	var wt *watching
	if watched != nil {
		if wt, err = beginWatching(c, p, dir, watched); err != nil {
			return err
		}
	}
	sup, err := bringUp(c, dir, req, c.Int("wait-timeout"))
	if err != nil {
		return err
	}
	if detach {
		return nil
	}
	if wt != nil {
		// The logs are attached meanwhile; watching ends with up.
		ctx, stop := context.WithCancel(c.Context)
		defer stop()
		go watchLive(c, p, dir, watched, wt)(ctx)
	}
	return foreground(c, sup, dir, req, abort)
}

// bringUp sends req to the project's supervisor (started when none runs)
// as up: with req.Wait, until the services are ready or waitTimeout
// seconds (when > 0) passed. A failure prints the failed service's log.
func bringUp(c *cli.Context, dir string, req *supervisor.Request, waitTimeout int) (*supervisorClient, error) {
	ctx := c.Context
	if waitTimeout > 0 && req.Wait {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(waitTimeout)*time.Second)
		defer cancel()
	}
	sup, err := connect(ctx, dir, true)
	if err != nil {
		return nil, err
	}
	if err := sup.call(ctx, "/up", req, printEvent(c)); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("up --wait: not every service was ready within %ds", waitTimeout)
		}
		reportFailure(c, dir, err)
		return nil, err
	}
	return sup, nil
}

// reportFailure prints the last lines of the log of the service an error
// names, as CI needs to see why.
func reportFailure(c *cli.Context, dir string, err error) {
	var sf *serviceFailure
	if !errors.As(err, &sf) || sf.service == "" {
		return
	}
	st, _ := reconcile.ReadState(dir)
	w := c.App.ErrWriter
	if w == nil {
		w = os.Stderr
	}
	for _, in := range st.Instances {
		if in.Service != sf.service {
			continue
		}
		lines, _, _ := supervisor.ReadLog(dir, in.VM, 20)
		fmt.Fprintf(w, "last lines of the log of %s:\n", in.VM)
		for _, l := range lines {
			fmt.Fprintf(w, "  %s | %s\n", in.VM, l.Text)
		}
		if len(lines) == 0 {
			fmt.Fprintf(w, "  (empty)\n")
		}
	}
}

// foreground streams the services' logs until they all ended, one ended
// with --abort-on-container-exit, or Ctrl-C; the last two stop them all.
// A service a watch is recreating, without a VM for a moment, has not
// ended.
func foreground(c *cli.Context, sup *supervisorClient, dir string, req *supervisor.Request, abort bool) error {
	st, err := reconcile.ReadState(dir)
	if err != nil {
		return err
	}
	var vms []string
	for _, in := range st.Instances {
		if len(req.Services) == 0 || slices.Contains(req.Services, in.Service) {
			vms = append(vms, in.VM)
		}
	}
	lctx, stopLogs := context.WithCancel(context.WithoutCancel(c.Context))
	defer stopLogs()
	printer := newLogPrinter(c.App.Writer, vms, false, true)
	go followAll(lctx, dir, req.Services, nil, printer)
	stopAll := func() error {
		stop := *req
		stop.Services = nil
		return sup.call(context.WithoutCancel(c.Context), "/stop", &stop, printEvent(c))
	}
	from := c.String("exit-code-from")
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-c.Context.Done():
			fmt.Fprintln(c.App.ErrWriter, "Gracefully stopping... (press Ctrl+C again to force)")
			stopLogs()
			if err := stopAll(); err != nil {
				return err
			}
			return exitCode(130)
		case <-t.C:
		}
		busy := recreates.Load() > 0 // before and after: a recreate may end meanwhile
		o, err := observe(c.Context, dir)
		busy = busy || recreates.Load() > 0
		if err != nil {
			continue
		}
		running, exited := 0, ""
		code := 0
		for _, in := range o.Instances {
			if !slices.Contains(vms, in.VM) {
				continue
			}
			if in.State == "running" || in.Phase == "starting" {
				running++
				continue
			}
			if in.Phase == "exited" && exited == "" && (from == "" || in.Service == from) {
				exited = in.VM
				if in.ExitCode != nil {
					code = *in.ExitCode
				}
			}
		}
		if abort && exited != "" {
			time.Sleep(300 * time.Millisecond) // the last lines of its log
			stopLogs()
			fmt.Fprintf(c.App.ErrWriter, "%s exited with code %d; stopping every service\n", exited, code)
			if err := stopAll(); err != nil {
				return err
			}
			if code != 0 {
				return exitCode(code)
			}
			return nil
		}
		if running == 0 && !busy {
			time.Sleep(300 * time.Millisecond)
			if from != "" && code != 0 {
				return exitCode(code)
			}
			return nil
		}
	}
}
