package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"github.com/vmcompose/vmcompose/network/netproc"
)

// networkCommand is the hidden command a supervisor starts, detached, as
// its project's network process: it holds the project's network so that
// the VMs keep it when the supervisor is replaced.
func networkCommand() *cli.Command {
	return &cli.Command{
		Name:   "network",
		Usage:  "run the network of a project (started by its supervisor)",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "state-dir", Required: true, Usage: "the project's state `DIR`"},
		},
		Action: runNetwork,
	}
}

func runNetwork(c *cli.Context) error {
	dir := c.String("state-dir")
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	ns := netproc.NewServer(dir, log)
	ns.Version = programVersion()
	ns.IdleExit = time.Minute
	// Detached from any terminal; SIGTERM (and SIGINT) end it, and with it
	// the network of the project's VMs.
	signal.Ignore(syscall.SIGHUP)
	err := ns.Run(c.Context)
	if errors.Is(err, netproc.ErrRunning) {
		log.Info("another network process runs; exiting")
		return nil
	}
	return err
}

// projectNetworks is the client of the network process of the project
// whose state dir is dir, which it starts when none runs: the supervisor's
// (for the instances) and run's (for its one-off VM).
func projectNetworks(dir string, log *slog.Logger) *netproc.Networks {
	var nets *netproc.Networks
	nets = netproc.NewNetworks(dir, log, func(ctx context.Context) (*netproc.Child, error) {
		return startNetwork(ctx, dir, func(ctx context.Context) error {
			_, err := nets.Ping(ctx)
			return err
		})
	})
	return nets
}

// startNetwork starts the network process of the project whose state dir
// is dir and waits until ping answers.
func startNetwork(ctx context.Context, dir string, ping func(context.Context) error) (*netproc.Child, error) {
	return startDetached(ctx, "the network process", filepath.Join(dir, netproc.LogName),
		[]string{"network", "--state-dir", dir}, ping)
}
