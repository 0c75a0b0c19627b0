package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/internal/terminal"
	"github.com/vmcompose/vmcompose/supervisor"
)

func execCommand() *cli.Command {
	return &cli.Command{
		Name:      "exec",
		Usage:     "run a command in a running service's VM",
		ArgsUsage: "SERVICE COMMAND [ARG...]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "no-TTY", Aliases: []string{"T"}, Usage: "no pseudo-terminal (default: one when stdin is a terminal)"},
			&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "set `KEY=VALUE` in the environment"},
			&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "run as `USER`"},
			&cli.StringFlag{Name: "workdir", Aliases: []string{"w"}, Usage: "run in `DIR`"},
			&cli.IntFlag{Name: "index", Value: 1, Usage: "the replica `N` of the service"},
		},
		Action: runExec,
	}
}

func runExec(c *cli.Context) error {
	if c.NArg() < 2 {
		return fmt.Errorf("exec: name the service and the command to run")
	}
	spec := &agent.ExecSpec{Argv: c.Args().Tail(), Env: c.StringSlice("env"), User: c.String("user"), WorkingDir: c.String("workdir")}
	spec.Tty = !c.Bool("no-TTY") && terminal.IsTerminal(os.Stdin)
	if spec.Tty {
		spec.Rows, spec.Cols = terminal.Size(os.Stdin)
	}
	code, err := execIn(c, c.Args().First(), c.Int("index"), spec, os.Stdin, c.App.Writer, c.App.ErrWriter)
	if err != nil {
		return err
	}
	if code != 0 {
		return exitCode(code)
	}
	return nil
}

// execIn runs spec in a service's VM through its supervisor and returns
// the exit code.
func execIn(c *cli.Context, service string, index int, spec *agent.ExecSpec, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	p, dir, err := projectState(c)
	if err != nil {
		return 0, err
	}
	if _, ok := p.Services[service]; !ok {
		return 0, fmt.Errorf("no such service: %s (the project has: %v)", service, p.ServiceNames())
	}
	ctx := context.WithoutCancel(c.Context)
	// Start the supervisor when none runs: it adopts the running VMs.
	if _, err := connect(ctx, dir, true); err != nil {
		return 0, err
	}
	req, err := request(c)
	if err != nil {
		return 0, err
	}
	req.Services, req.Index, req.Exec = []string{service}, index, spec
	sess, err := supervisor.StartExec(ctx, dir, req)
	if err != nil {
		return 0, err
	}
	defer sess.Close()
	in := sess.Input
	if spec.Tty {
		restore := terminal.Raw(os.Stdin, in)
		defer restore()
	} else {
		// Signals go to the process, as docker compose exec forwards them.
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
		defer signal.Stop(sigs)
		go func() {
			for sig := range sigs {
				in.Signal(unix.SignalName(sig.(syscall.Signal)))
			}
		}()
	}
	go in.SendStdin(stdin)
	st, err := sess.Wait(stdout, stderr)
	if err != nil {
		return 0, fmt.Errorf("exec in %s: %w", service, err)
	}
	return st.Code, nil
}
