package supervisor

import (
	"context"
	"fmt"
	"io"
	"net"

	"github.com/vmcompose/vmcompose/guest/agent"
)

// ExecSession is a command running in an instance of the project whose
// state dir is dir, through its supervisor (POST /exec). Input carries
// its stdin, terminal size and signals; Wait copies its output.
type ExecSession struct {
	Input *agent.Input
	conn  net.Conn
	out   io.Reader
}

// StartExec starts req.Exec in the instance req names (Services[0],
// Index; 0 is 1).
func StartExec(ctx context.Context, dir string, req *Request) (*ExecSession, error) {
	conn, out, err := hijacked(ctx, dir, "/exec", req)
	if err != nil {
		return nil, err
	}
	return &ExecSession{Input: agent.NewInput(conn), conn: conn, out: out}, nil
}

// Wait copies the command's output until it ended and returns how.
func (e *ExecSession) Wait(stdout, stderr io.Writer) (agent.ExitStatus, error) {
	return agent.ReadOutput(e.out, stdout, stderr)
}

// Close ends the session; a command still running is left to the guest.
func (e *ExecSession) Close() error { return e.conn.Close() }

// Exec runs req.Exec with stdin (nil: none) to its end and returns its
// exit code. Cancelling ctx closes the connection.
func Exec(ctx context.Context, dir string, req *Request, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	e, err := StartExec(ctx, dir, req)
	if err != nil {
		return 0, err
	}
	defer e.Close()
	stop := context.AfterFunc(ctx, func() { e.Close() })
	defer stop()
	if stdin == nil {
		go e.Input.CloseStdin()
	} else {
		go e.Input.SendStdin(stdin)
	}
	st, err := e.Wait(stdout, stderr)
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	if err != nil {
		return 0, fmt.Errorf("exec in %s: %w", req.Services[0], err)
	}
	return st.Code, nil
}
