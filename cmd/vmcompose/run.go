package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/reconcile"
	"github.com/vmcompose/vmcompose/vm"
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run a one-off command of a service in a new VM",
		ArgsUsage: "SERVICE [COMMAND [ARG...]]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "rm", Usage: "remove the VM when the command exits"},
			&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "set `KEY=VALUE` in the environment"},
			&cli.StringFlag{Name: "entrypoint", Usage: "override the image's entrypoint"},
			&cli.StringFlag{Name: "name", Usage: "name of the VM (default: SERVICE-run-RANDOM)"},
		},
		// Flags after SERVICE belong to COMMAND, as in docker compose run.
		SkipFlagParsing: false,
		Action:          runRun,
	}
}

func runRun(c *cli.Context) error {
	if c.NArg() == 0 {
		return fmt.Errorf("run: name the service to run")
	}
	p, err := loadProject(c)
	if err != nil {
		return err
	}
	name := c.Args().First()
	svc, ok := p.Services[name]
	if !ok {
		if svc, ok = p.DisabledServices[name]; !ok {
			return fmt.Errorf("no such service: %s (the project has: %v)", name, p.ServiceNames())
		}
		// docker compose run starts a service whatever its profiles.
	}
	for _, w := range reconcile.BindWarnings(svc) {
		fmt.Fprintf(c.App.ErrWriter, "warning: %s\n", w)
	}
	rt, err := newRuntime(c, p.Name)
	if err != nil {
		return err
	}
	vmName := c.String("name")
	if vmName == "" {
		vmName = name + "-run-" + randomHex(3)
	}
	dir, err := reconcile.StateDir(p.Name)
	if err != nil {
		return err
	}
	prep, err := rt.Prepare(c.Context, reconcile.Service{
		Project: p, Name: vmName, Config: svc, StateDir: dir,
		Env: c.StringSlice("env"), Entrypoint: c.String("entrypoint"), Command: c.Args().Tail(),
	})
	if err != nil {
		if _, ierr := rt.Driver.Inspect(c.Context, vmName); errors.Is(ierr, vm.ErrNotFound) {
			reconcile.RemoveAnonVolumes(dir, vmName) // made for no VM
		}
		return err
	}
	// remove removes the VM and, as docker compose run --rm does with the
	// container, its anonymous volumes; named volumes stay.
	remove := func(ctx context.Context) error {
		if err := rt.Driver.Remove(ctx, vmName); err != nil {
			return err
		}
		return reconcile.RemoveAnonVolumes(dir, vmName)
	}
	// The VM lives as long as this command: if vmcompose dies, so does it.
	prep.Spec.DieWithController = true

	// Signals go to the service, not to us: the first Ctrl-C stops it the
	// way docker compose run does, a second one kills the VM.
	ctx := context.WithoutCancel(c.Context)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)

	att, err := rt.Boot(ctx, prep)
	if err != nil {
		remove(ctx)
		return err
	}
	go func() {
		n := 0
		for sig := range sigs {
			if n++; n > 1 && sig == os.Interrupt {
				rt.Driver.Kill(ctx, vmName)
				return
			}
			att.Client.Signal(ctx, unix.SignalName(sig.(syscall.Signal)))
		}
	}()
	status, err := att.Stream(ctx, c.App.Writer, c.App.ErrWriter)
	att.Close()
	// The guest powers off once the exit status is delivered; wait for it.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if _, werr := vm.Wait(wctx, rt.Driver, vmName); werr != nil {
		rt.Driver.Kill(ctx, vmName)
	}
	cancel()
	if c.Bool("rm") {
		if rerr := remove(ctx); rerr != nil && err == nil {
			err = rerr
		}
	}
	if err != nil {
		return err
	}
	if status.Code != 0 {
		return exitCode(status.Code)
	}
	return nil
}

// exitCode makes vmcompose exit with a service's status and print nothing.
type exitCode int

func (e exitCode) Error() string { return "" }
func (e exitCode) ExitCode() int { return int(e) }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// vmRoot is where a project's VMs live: <state dir>/vms.
func vmRoot(projectName string) (string, error) {
	dir, err := reconcile.StateDir(projectName)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "vms"), nil
}
