package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
	"golang.org/x/term"

	"github.com/vmcompose/vmcompose/guest/agent"
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
	stdinFd := int(os.Stdin.Fd())
	spec.Tty = !c.Bool("no-TTY") && term.IsTerminal(stdinFd)
	if spec.Tty {
		spec.Rows, spec.Cols = 24, 80 // a terminal that does not know its size
		if cols, rows, err := term.GetSize(stdinFd); err == nil && rows > 0 && cols > 0 {
			spec.Rows, spec.Cols = uint16(rows), uint16(cols)
		}
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
	body, _ := json.Marshal(req)
	conn, err := supervisor.DialSupervisor(ctx, dir)
	if err != nil {
		return 0, fmt.Errorf("talking to the supervisor: %w", err)
	}
	defer conn.Close()
	hreq, _ := http.NewRequest("POST", "http://supervisor/exec", bytes.NewReader(body))
	if err := hreq.Write(conn); err != nil {
		return 0, fmt.Errorf("talking to the supervisor: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, hreq)
	if err != nil {
		return 0, fmt.Errorf("talking to the supervisor: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return 0, fmt.Errorf("%s", strings.TrimSpace(string(b)))
	}
	var wmu sync.Mutex
	send := func(typ byte, payload []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return agent.WriteFrame(conn, typ, payload)
	}
	if spec.Tty {
		fd := int(os.Stdin.Fd())
		if old, err := term.MakeRaw(fd); err == nil {
			defer term.Restore(fd, old)
		}
		winch := make(chan os.Signal, 1)
		signal.Notify(winch, syscall.SIGWINCH)
		defer signal.Stop(winch)
		go func() {
			for range winch {
				if cols, rows, err := term.GetSize(fd); err == nil {
					var b [4]byte
					binary.BigEndian.PutUint16(b[:], uint16(rows))
					binary.BigEndian.PutUint16(b[2:], uint16(cols))
					send(agent.FrameResize, b[:])
				}
			}
		}()
	} else {
		// Signals go to the process, as docker compose exec forwards them.
		sigs := make(chan os.Signal, 4)
		signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
		defer signal.Stop(sigs)
		go func() {
			for sig := range sigs {
				send(agent.FrameSignal, []byte(unix.SignalName(sig.(syscall.Signal))))
			}
		}()
	}
	go func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := stdin.Read(buf)
			if n > 0 && send(agent.FrameStdin, buf[:n]) != nil {
				return
			}
			if err != nil {
				send(agent.FrameStdinEOF, nil)
				return
			}
		}
	}()
	var buf []byte
	for {
		typ, payload, err := agent.ReadFrame(br, buf)
		if err != nil {
			return 0, fmt.Errorf("exec in %s: the connection ended early: %w", service, err)
		}
		buf = payload[:0]
		switch typ {
		case agent.FrameStdout:
			stdout.Write(payload)
		case agent.FrameStderr:
			stderr.Write(payload)
		case agent.FrameExit:
			var st agent.ExitStatus
			if err := json.Unmarshal(payload, &st); err != nil {
				return 0, fmt.Errorf("exec in %s: exit status: %w", service, err)
			}
			return st.Code, nil
		}
	}
}
