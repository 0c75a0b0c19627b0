package agent

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

// Client is the host's end of one connection to a guest's agent. Its
// methods are safe for concurrent use. A Client does not own the VM: closing
// it (or losing the connection) leaves the service running, and a new Dial
// on a new connection picks it up again.
type Client struct {
	conn    net.Conn
	session *yamux.Session
	status  Status
}

// Dial runs the handshake on conn (a connection to the VM's agent socket)
// and starts the multiplexer. It waits, until ctx ends, for the guest to
// answer: a guest that is still booting answers once vminit is up, which
// takes about a second under TCG. The Client owns conn from then on, also
// when Dial fails.
func Dial(ctx context.Context, conn net.Conn) (*Client, error) {
	if err := hostHandshake(ctx, conn); err != nil {
		conn.Close()
		return nil, err
	}
	session, err := yamux.Client(conn, YamuxConfig())
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("agent session: %w", err)
	}
	c := &Client{conn: conn, session: session}
	var resp Response
	if err := c.roundTrip(ctx, Request{Op: opHello}, &resp); err != nil {
		c.Close()
		return nil, err
	}
	if resp.Status == nil || resp.Status.Version != ProtocolVersion {
		c.Close()
		v := 0
		if resp.Status != nil {
			v = resp.Status.Version
		}
		return nil, fmt.Errorf("agent protocol version %d, want %d: rebuild the initramfs", v, ProtocolVersion)
	}
	c.status = *resp.Status
	if c.status.Phase == PhaseTemplate {
		if err := c.resume(ctx); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

// resume finishes the boot of a guest restored from a template: it gives
// the guest fresh entropy and the time, the guest sets up its devices and
// root and answers with its status, which says why (PhaseFailed) when the
// root could not be set up.
func (c *Client) resume(ctx context.Context) error {
	r := Resume{Entropy: make([]byte, 64), Time: time.Now()}
	if _, err := rand.Read(r.Entropy); err != nil {
		return fmt.Errorf("resuming the guest: %w", err)
	}
	var resp Response
	if err := c.roundTrip(ctx, Request{Op: opResume, Resume: &r}, &resp); err != nil {
		return fmt.Errorf("resuming the guest: %w", err)
	}
	if resp.Status == nil {
		return errors.New("resuming the guest: no status in its answer")
	}
	c.status = *resp.Status
	return nil
}

// DialSocket connects to the unix socket at path, the host end of a VM's
// channel, and runs Dial on it. It retries until ctx ends while the VMM has
// not created the socket yet, refuses the connection for a moment after
// creating it, or the guest has not answered.
func DialSocket(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	for {
		conn, err := d.DialContext(ctx, "unix", path)
		if err == nil {
			c, err := Dial(ctx, conn)
			if err == nil {
				return c, nil
			}
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("connecting to the guest agent at %s: %w (last: %v)", path, ctx.Err(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// Close ends the connection. The guest keeps running.
func (c *Client) Close() error {
	c.session.Close()
	return c.conn.Close()
}

// Done is closed when the connection ends (the VM powered off, or the
// connection broke).
func (c *Client) Done() <-chan struct{} { return c.session.CloseChan() }

// Status asks the guest where its service is.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var resp Response
	if err := c.roundTrip(ctx, Request{Op: opHello}, &resp); err != nil {
		return Status{}, err
	}
	return *resp.Status, nil
}

// Start starts the service as spec says. It returns once the process runs,
// or with the reason it could not start (ErrInvalid for a bad user, sysctl
// or command; ErrBootFailed when the guest's root could not be set up).
// Start on a guest whose service was already started returns
// ErrAlreadyStarted: a service runs once per boot.
func (c *Client) Start(ctx context.Context, spec Spec) error {
	return c.roundTrip(ctx, Request{Op: opStart, Spec: &spec}, &Response{})
}

// Prepare is Start's first step: everything but the process (and the
// read-only remount of a read_only root), so that a host can put files in
// place (Sync) before the service sees them. The guest is then in
// PhasePrepared until Launch; errors are Start's.
func (c *Client) Prepare(ctx context.Context, spec Spec) error {
	return c.roundTrip(ctx, Request{Op: opPrepare, Spec: &spec}, &Response{})
}

// Launch is Start's second step: it starts the process of the spec that
// Prepare was given. ErrNotStarted when Prepare was not called;
// ErrAlreadyStarted when the process was launched already.
func (c *Client) Launch(ctx context.Context) error {
	return c.roundTrip(ctx, Request{Op: opLaunch}, &Response{})
}

// Output names one of the service's output streams.
type Output string

const (
	Stdout Output = "stdout"
	Stderr Output = "stderr"
)

// Attach streams the service's stdout or stderr, starting at byte offset
// (0 for the beginning). The guest keeps the last RingSize bytes of each; if
// offset is older than that, the stream starts at the oldest byte kept and
// start says where (start > offset means start-offset bytes were lost).
// While attached, nothing is lost: a service that writes faster than the
// host reads waits for it, as with docker's default blocking logs, so keep
// reading (or Close).
// Reading returns io.EOF once the service has exited and all its output was
// read; the reader then closes itself, which tells the guest the output was
// delivered (the guest holds its power-off for that, at most 5 s). Attach
// before Start waits for the service to start. Close the reader to detach;
// the service does not notice.
func (c *Client) Attach(ctx context.Context, which Output, offset int64) (r io.ReadCloser, start int64, err error) {
	var resp Response
	s, err := c.open(ctx, Request{Op: opAttach, Stream: string(which), Offset: offset}, &resp)
	if err != nil {
		return nil, 0, err
	}
	return attachReader{s}, resp.Offset, nil
}

// attachReader closes the stream at EOF: that tells the guest the output
// was delivered.
type attachReader struct{ net.Conn }

func (a attachReader) Read(p []byte) (int, error) {
	n, err := a.Conn.Read(p)
	if err == io.EOF {
		a.Conn.Close()
	}
	return n, err
}

// Wait blocks until the service has exited and returns how. The guest
// powers the VM off once Wait (or Shutdown) has delivered the exit status
// to a host and every attached output stream has been read to its end, or
// one minute after the exit if no host takes it. Wait before Start waits
// for the service to start and then exit.
func (c *Client) Wait(ctx context.Context) (ExitStatus, error) {
	return c.exitOp(ctx, Request{Op: opWait})
}

// Signal sends a signal, by name ("SIGHUP", "HUP" or a Linux number such as
// "1"), to the service process. ErrNotStarted before Start, ErrExited after
// the process exited.
func (c *Client) Signal(ctx context.Context, sig string) error {
	return c.roundTrip(ctx, Request{Op: opSignal, Signal: sig}, &Response{})
}

// Shutdown stops the service the way `docker stop` does: the stop signal to
// the service process, then after the grace period SIGKILL to every process
// in the guest. It returns the exit status, after which the guest powers off.
// Shutdown of a guest whose service never started powers it off and returns
// ErrNotStarted; of one that already exited, it returns the status it had.
func (c *Client) Shutdown(ctx context.Context) (ExitStatus, error) {
	return c.exitOp(ctx, Request{Op: opShutdown})
}

// exitOp reads an exit status and acknowledges it by closing the stream.
func (c *Client) exitOp(ctx context.Context, req Request) (ExitStatus, error) {
	var resp Response
	s, err := c.open(ctx, req, &resp)
	if err != nil {
		return ExitStatus{}, err
	}
	s.Close()
	if resp.Exit == nil {
		return ExitStatus{}, errors.New("agent response without an exit status")
	}
	return *resp.Exit, nil
}

// Health runs a healthcheck command as the service's user, in its
// environment and working directory, and returns its result. argv is run as
// it is: for compose's CMD-SHELL, pass []string{"/bin/sh", "-c", cmd}. The
// guest kills the command when timeout passes (0 means 30 s) and reports
// TimedOut; err is only for a broken channel or a command that could not
// start.
func (c *Client) Health(ctx context.Context, argv []string, timeout time.Duration) (HealthResult, error) {
	var resp Response
	if err := c.roundTrip(ctx, Request{Op: opHealth, Argv: argv, Timeout: timeout}, &resp); err != nil {
		return HealthResult{}, err
	}
	if resp.Health == nil {
		return HealthResult{}, errors.New("agent response without a health result")
	}
	return *resp.Health, nil
}

// ExecIO are the standard streams of an exec'd process. Nil Stdin is an
// empty stdin; nil Stdout or Stderr discards.
type ExecIO struct {
	Stdin          io.Reader
	Stdout, Stderr io.Writer
}

// Process is a running exec'd process.
type Process struct {
	// Pid is the process's pid in the guest.
	Pid int

	in   Input
	done chan struct{}
	exit ExitStatus
	err  error
}

// Exec starts spec.Argv in the guest next to the service and copies its
// output to stdio until it exits. The process is killed when ctx ends
// before it exits, or when the connection breaks: an exec does not outlive
// its host. Exec works before Start too (root, the image's environment).
func (c *Client) Exec(ctx context.Context, spec ExecSpec, stdio ExecIO) (*Process, error) {
	var resp Response
	s, err := c.open(ctx, Request{Op: opExec, Exec: &spec}, &resp)
	if err != nil {
		return nil, err
	}
	p := &Process{Pid: resp.Pid, in: Input{stream: s}, done: make(chan struct{})}
	stop := context.AfterFunc(ctx, func() { abort(s) })
	if stdio.Stdin != nil {
		go p.in.SendStdin(stdio.Stdin)
	} else {
		p.in.CloseStdin()
	}
	go func() {
		defer close(p.done)
		defer stop()
		p.exit, p.err = ReadOutput(s, stdio.Stdout, stdio.Stderr)
		if p.err != nil && ctx.Err() != nil {
			p.err = ctx.Err()
		}
		s.Close()
	}()
	return p, nil
}

// ReadOutput reads an exec's output frames from r, copying stdout and
// stderr, until the exit frame, and returns the exit status. Nil stdout or
// stderr discards.
func ReadOutput(r io.Reader, stdout, stderr io.Writer) (ExitStatus, error) {
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	var buf []byte
	for {
		typ, payload, err := ReadFrame(r, buf)
		if err != nil {
			return ExitStatus{}, fmt.Errorf("exec stream: %w", noEOF(err))
		}
		buf = payload[:0]
		switch typ {
		case FrameStdout:
			if _, err := stdout.Write(payload); err != nil {
				return ExitStatus{}, fmt.Errorf("exec stdout: %w", err)
			}
		case FrameStderr:
			if _, err := stderr.Write(payload); err != nil {
				return ExitStatus{}, fmt.Errorf("exec stderr: %w", err)
			}
		case FrameExit:
			var st ExitStatus
			if err := json.Unmarshal(payload, &st); err != nil {
				return ExitStatus{}, fmt.Errorf("exec exit frame: %w", err)
			}
			return st, nil
		default:
			return ExitStatus{}, fmt.Errorf("exec frame of unknown type %d", typ)
		}
	}
}

// Resize changes the terminal size of a process started with Tty.
func (p *Process) Resize(rows, cols uint16) error { return p.in.Resize(rows, cols) }

// Signal sends a signal, by name, to the process.
func (p *Process) Signal(sig string) error { return p.in.Signal(sig) }

// Wait returns how the process ended, once it did and all its output was
// copied. It does not wait for a Stdin reader that is blocked.
func (p *Process) Wait() (ExitStatus, error) {
	<-p.done
	return p.exit, p.err
}

// Input is the host's end of the service's stdin and terminal
// (Client.Input); an exec'd Process writes its own through one. Its
// methods are safe for concurrent use.
type Input struct {
	stream net.Conn
	wmu    sync.Mutex
}

// NewInput is an Input that writes its frames to conn, a stream that
// carries them to a process: the supervisor relays an exec's frames over
// its own connection.
func NewInput(conn net.Conn) *Input { return &Input{stream: conn} }

// Input opens the service's stdin and terminal. Writes reach its stdin when
// the service was started with OpenStdin, Resize its terminal when with
// Tty; on a service with neither, Input fails with ErrInvalid, and before
// Start with ErrNotStarted. Several hosts may hold one at once. Close
// detaches and leaves stdin open; CloseStdin ends it (without Tty: with a
// terminal, type ^D instead).
func (c *Client) Input(ctx context.Context) (*Input, error) {
	s, err := c.open(ctx, Request{Op: opInput}, &Response{})
	if err != nil {
		return nil, err
	}
	return &Input{stream: s}, nil
}

// Write sends p to the process's stdin.
func (in *Input) Write(p []byte) (int, error) {
	for n := 0; n < len(p); {
		chunk := p[n:min(len(p), n+maxFrame)]
		if err := in.writeFrame(FrameStdin, chunk); err != nil {
			return n, err
		}
		n += len(chunk)
	}
	return len(p), nil
}

// SendStdin copies r to the process's stdin and closes it at r's end. A
// failed write (the process or the connection is gone) ends the copy and
// leaves stdin as it is.
func (in *Input) SendStdin(r io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, werr := in.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			in.CloseStdin()
			return
		}
	}
}

// CloseStdin closes the process's stdin: it reads EOF once it has read
// what was written. It does nothing to a terminal.
func (in *Input) CloseStdin() error { return in.writeFrame(FrameStdinEOF, nil) }

// Resize changes the size of the process's terminal.
func (in *Input) Resize(rows, cols uint16) error {
	var b [4]byte
	binary.BigEndian.PutUint16(b[:], rows)
	binary.BigEndian.PutUint16(b[2:], cols)
	return in.writeFrame(FrameResize, b[:])
}

// Signal sends a signal, by name, to the process.
func (in *Input) Signal(sig string) error { return in.writeFrame(FrameSignal, []byte(sig)) }

// Close detaches from the service's input; the service does not notice.
func (in *Input) Close() error { return in.stream.Close() }

func (in *Input) writeFrame(typ byte, payload []byte) error {
	in.wmu.Lock()
	defer in.wmu.Unlock()
	return WriteFrame(in.stream, typ, payload)
}

// open opens a stream, writes req and reads the response header into resp.
// The stream closes when ctx ends before the response arrives.
func (c *Client) open(ctx context.Context, req Request, resp *Response) (net.Conn, error) {
	s, err := c.session.Open()
	if err != nil {
		return nil, fmt.Errorf("agent %s: %w", req.Op, err)
	}
	stop := context.AfterFunc(ctx, func() { abort(s) })
	err = WriteHeader(s, req)
	if err == nil {
		err = ReadHeader(s, resp)
	}
	if !stop() {
		s.Close()
		return nil, fmt.Errorf("agent %s: %w", req.Op, ctx.Err())
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("agent %s: %w", req.Op, err)
	}
	if err := resp.err(); err != nil {
		s.Close()
		return nil, fmt.Errorf("agent %s: %w", req.Op, err)
	}
	return s, nil
}

// roundTrip is open for operations whose stream ends with the response.
func (c *Client) roundTrip(ctx context.Context, req Request, resp *Response) error {
	s, err := c.open(ctx, req, resp)
	if err != nil {
		return err
	}
	return s.Close()
}

// abort unblocks every reader and writer of s and closes it.
func abort(s net.Conn) {
	s.SetDeadline(time.Unix(1, 0))
	s.Close()
}
