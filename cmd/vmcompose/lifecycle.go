package main

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/supervisor"
)

func lifecycleCommands() []*cli.Command {
	timeout := func() cli.Flag {
		return &cli.IntFlag{Name: "timeout", Aliases: []string{"t"}, Value: -1, DefaultText: "its stop_grace_period", Usage: "`SECONDS` to wait for a service to stop"}
	}
	return []*cli.Command{{
		Name: "start", Usage: "start the services' existing VMs", ArgsUsage: "[SERVICE...]",
		Action: func(c *cli.Context) error { return servicesOp(c, "/start", nil) },
	}, {
		Name: "stop", Usage: "stop the services' VMs, keeping them", ArgsUsage: "[SERVICE...]",
		Flags:  []cli.Flag{timeout()},
		Action: func(c *cli.Context) error { return servicesOp(c, "/stop", nil) },
	}, {
		Name: "restart", Usage: "stop and start the services' VMs", ArgsUsage: "[SERVICE...]",
		Flags:  []cli.Flag{timeout()},
		Action: func(c *cli.Context) error { return servicesOp(c, "/restart", nil) },
	}, {
		Name: "kill", Usage: "send a signal to the services' processes", ArgsUsage: "[SERVICE...]",
		Flags: []cli.Flag{&cli.StringFlag{Name: "signal", Aliases: []string{"s"}, Value: "SIGKILL", Usage: "the `SIGNAL` to send"}},
		Action: func(c *cli.Context) error {
			sig := strings.ToUpper(c.String("signal"))
			if sig != "" && !strings.HasPrefix(sig, "SIG") && (sig[0] < '0' || sig[0] > '9') {
				sig = "SIG" + sig
			}
			return servicesOp(c, "/kill", func(r *supervisor.Request) { r.Signal = sig })
		},
	}, {
		Name: "top", Usage: "show the processes running in the services' VMs", ArgsUsage: "[SERVICE...]",
		Action: runTop,
	}}
}

// servicesOp sends an operation on the named services to the supervisor.
func servicesOp(c *cli.Context, path string, edit func(*supervisor.Request)) error {
	_, dir, err := projectState(c)
	if err != nil {
		return err
	}
	sup, err := connect(c.Context, dir, true)
	if err != nil {
		return err
	}
	req, err := request(c)
	if err != nil {
		return err
	}
	req.Services = c.Args().Slice()
	if c.IsSet("timeout") {
		req.Timeout = c.Int("timeout")
	}
	if edit != nil {
		edit(req)
	}
	err = sup.call(c.Context, path, req, printEvent(c))
	if err != nil {
		reportFailure(c, dir, err)
	}
	return err
}

// runTop runs ps in each running VM of the named services.
func runTop(c *cli.Context) error {
	_, dir, err := projectState(c)
	if err != nil {
		return err
	}
	o, err := observe(c.Context, dir)
	if err != nil {
		return err
	}
	for _, in := range o.Instances {
		if in.State != "running" || (c.NArg() > 0 && !contains(c.Args().Slice(), in.Service)) {
			continue
		}
		// The columns both busybox's and procps' ps know; plain ps else.
		var out, errb bytes.Buffer
		var code int
		for _, argv := range [][]string{{"ps", "-o", "pid,user,args"}, {"ps"}} {
			out.Reset()
			errb.Reset()
			if code, err = execIn(c, in.Service, in.Number, &agent.ExecSpec{Argv: argv}, bytes.NewReader(nil), &out, &errb); err != nil {
				return err
			}
			if code == 0 {
				break
			}
		}
		fmt.Fprintln(c.App.Writer, in.VM)
		if code != 0 {
			fmt.Fprintf(c.App.Writer, "  (ps exited with %d: %s)\n", code, strings.TrimSpace(errb.String()))
			continue
		}
		fmt.Fprint(c.App.Writer, out.String())
		fmt.Fprintln(c.App.Writer)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
