package agentd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/creack/pty"
	"github.com/hashicorp/yamux"
	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/guest/agent"
)

// exitReportTimeout is how long the guest stays up after the service exited
// when no host takes the exit status.
const exitReportTimeout = time.Minute

// drainTimeout bounds how long output is still read after the service
// exited: a background process that inherited its stdout could hold the
// pipe open for ever.
const drainTimeout = 2 * time.Second

// Server runs the service and answers the host. One Server lives for the
// whole boot; each host connection is one Serve call.
type Server struct {
	log     *slog.Logger
	bootErr error
	reaper  *reaper
	stdout  *ring
	stderr  *ring

	mu    sync.Mutex
	phase agent.Phase
	spec  *agent.Spec
	input *os.File // the service's stdin pipe or terminal; nil when neither
	pid   int
	exit  agent.ExitStatus

	started  chan struct{} // closed when the service process runs
	exited   chan struct{} // closed when it exited and its output ended
	reported chan struct{} // closed when a host acknowledged the exit status
	poweroff chan struct{} // closed by Shutdown on a guest with no service
	hurry    chan struct{} // closed by PowerButton
	hurryOne sync.Once
	ackOnce  sync.Once
	offOnce  sync.Once

	attaches atomic.Int32 // attach streams still sending

	// restarting is set while the service process is restarted in
	// place; follow answers on it.
	restarting chan restartDone

	// resume finishes the boot of a guest restored from a template; set
	// in PhaseTemplate only.
	resume func(agent.Resume) error
}

// NewTemplate returns a Server for a guest booted as a template: it is in
// agent.PhaseTemplate until a host sends Resume, which runs resume (the
// rest of the boot: devices, root) and leaves the guest ready, or failed
// with resume's error.
func NewTemplate(log *slog.Logger, resume func(agent.Resume) error) *Server {
	s := New(log, nil)
	s.phase = agent.PhaseTemplate
	s.resume = resume
	return s
}

// New returns a Server. bootErr is the reason the root could not be set up,
// or nil; with it, Start fails with agent.ErrBootFailed and that message.
func New(log *slog.Logger, bootErr error) *Server {
	phase := agent.PhaseReady
	if bootErr != nil {
		phase = agent.PhaseFailed
	}
	return &Server{
		log:      log,
		bootErr:  bootErr,
		reaper:   newReaper(),
		stdout:   newRing(agent.RingSize),
		stderr:   newRing(agent.RingSize),
		phase:    phase,
		started:  make(chan struct{}),
		exited:   make(chan struct{}),
		reported: make(chan struct{}),
		poweroff: make(chan struct{}),
		hurry:    make(chan struct{}),
	}
}

// WaitPoweroff blocks until the VM should power off: the service exited,
// its exit status reached a host (or exitReportTimeout passed) and the
// attached output streams were sent to their end; or Shutdown was asked of a
// guest whose service never started.
func (s *Server) WaitPoweroff() {
	select {
	case <-s.poweroff:
		return
	case <-s.exited:
	}
	report := time.NewTimer(exitReportTimeout)
	hurry := s.hurry
wait:
	for {
		select {
		case <-s.reported:
			break wait
		case <-hurry:
			// The VMM asked for power-off: a host that waits for the
			// exit status has it within this second.
			hurry = nil
			report.Reset(time.Second)
		case <-report.C:
			s.log.Warn("no host took the exit status; powering off")
			break wait
		}
	}
	for deadline := time.Now().Add(5 * time.Second); s.attaches.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
}

// PowerButton is the VMM asking the guest to shut down (ACPI power
// button): the service is stopped as Shutdown does, and the guest powers off
// without waiting long for a host to take the exit status.
func (s *Server) PowerButton() {
	s.hurryOne.Do(func() { close(s.hurry) })
	if !s.stop() {
		s.offOnce.Do(func() { close(s.poweroff) })
	}
}

// Serve answers one host connection until it breaks. The service is not
// affected when it does.
func (s *Server) Serve(conn io.ReadWriteCloser) error {
	session, err := yamux.Server(conn, agent.YamuxConfig())
	if err != nil {
		return err
	}
	defer session.Close()
	for {
		st, err := session.AcceptStream()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, yamux.ErrSessionShutdown) {
				return nil
			}
			return err
		}
		go s.handle(st)
	}
}

func (s *Server) handle(st net.Conn) {
	defer st.Close()
	defer func() {
		// A bug in one request must not end PID 1 (the kernel would
		// panic): log it and drop the stream.
		if r := recover(); r != nil {
			s.log.Error("agent request panicked", "panic", r, "stack", string(debug.Stack()))
		}
	}()
	var req agent.Request
	if err := agent.ReadHeader(st, &req); err != nil {
		s.log.Warn("agent request", "err", err)
		return
	}
	var err error
	switch req.Op {
	case "hello":
		err = s.reply(st, agent.Response{Status: s.status()})
	case "start":
		err = s.handleStart(st, req.Spec)
	case "attach":
		err = s.handleAttach(st, req)
	case "wait":
		err = s.handleWait(st, false)
	case "shutdown":
		err = s.handleWait(st, true)
	case "signal":
		err = s.handleSignal(st, req.Signal)
	case "exec":
		err = s.handleExec(st, req.Exec)
	case "health":
		err = s.handleHealth(st, req)
	case "resume":
		err = s.handleResume(st, req.Resume)
	case "input":
		err = s.handleInput(st)
	case "sync":
		err = s.handleSync(st, req.Sync)
	case "restart":
		err = s.handleRestart(st)
	case "prepare":
		err = s.handlePrepare(st, req.Spec)
	case "launch":
		err = s.reply(st, result(s.launchPrepared()))
	default:
		err = s.reply(st, errResponse(fmt.Errorf("%w: unknown operation %q", agent.ErrInvalid, req.Op)))
	}
	if err != nil {
		s.log.Debug("agent stream", "op", req.Op, "err", err)
	}
}

func (s *Server) reply(st net.Conn, resp agent.Response) error {
	return agent.WriteHeader(st, resp)
}

func errResponse(err error) agent.Response {
	return agent.Response{Error: err.Error(), Code: agent.CodeOf(err)}
}

func (s *Server) status() *agent.Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := &agent.Status{Version: agent.ProtocolVersion, Phase: s.phase, Pid: s.pid, Uptime: uptime()}
	if s.phase == agent.PhaseExited {
		exit := s.exit
		st.Exit = &exit
		st.Pid = 0
	}
	if s.bootErr != nil {
		st.BootError = s.bootErr.Error()
	}
	return st
}

func uptime() time.Duration {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts) != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// bootError is why the guest could not boot, or nil.
func (s *Server) bootError() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.bootErr
}

func (s *Server) handleResume(st net.Conn, r *agent.Resume) error {
	if r == nil {
		return s.reply(st, errResponse(fmt.Errorf("%w: resume without its fields", agent.ErrInvalid)))
	}
	s.mu.Lock()
	if s.phase != agent.PhaseTemplate {
		s.mu.Unlock()
		return s.reply(st, errResponse(fmt.Errorf("%w: not a template waiting to be resumed", agent.ErrInvalid)))
	}
	s.phase = agent.PhaseBooting
	resume := s.resume
	s.mu.Unlock()

	err := resume(*r)
	s.mu.Lock()
	if err != nil {
		s.bootErr, s.phase = err, agent.PhaseFailed
	} else {
		s.phase = agent.PhaseReady
	}
	s.mu.Unlock()
	if err != nil {
		s.log.Error("boot", "err", err)
	} else {
		s.log.Info("root ready")
	}
	// A root that could not be set up is in the status, as after a cold
	// boot.
	return s.reply(st, agent.Response{Status: s.status()})
}

func (s *Server) handleStart(st net.Conn, spec *agent.Spec) error {
	if spec == nil {
		return s.reply(st, errResponse(fmt.Errorf("%w: start without a spec", agent.ErrInvalid)))
	}
	err := s.prepare(*spec)
	if err == nil {
		err = s.launchPrepared()
	}
	if err != nil {
		s.log.Error("starting the service", "err", err)
	}
	return s.reply(st, result(err))
}

func (s *Server) handlePrepare(st net.Conn, spec *agent.Spec) error {
	if spec == nil {
		return s.reply(st, errResponse(fmt.Errorf("%w: prepare without a spec", agent.ErrInvalid)))
	}
	err := s.prepare(*spec)
	if err != nil {
		s.log.Error("preparing the service", "err", err)
	}
	return s.reply(st, result(err))
}

// result is the answer to an operation that returns nothing but its error.
func result(err error) agent.Response {
	if err != nil {
		return errResponse(err)
	}
	return agent.Response{}
}

func (s *Server) handleAttach(st net.Conn, req agent.Request) error {
	var r *ring
	switch agent.Output(req.Stream) {
	case agent.Stdout:
		r = s.stdout
	case agent.Stderr:
		r = s.stderr
	default:
		return s.reply(st, errResponse(fmt.Errorf("%w: attach to %q: want stdout or stderr", agent.ErrInvalid, req.Stream)))
	}
	if err := s.bootError(); err != nil {
		return s.reply(st, errResponse(fmt.Errorf("%w: %v", agent.ErrBootFailed, err)))
	}
	s.attaches.Add(1)
	defer s.attaches.Add(-1)
	// The host never writes on an attach stream: a read returns when it
	// closes (detach) or the session ends.
	gone := make(chan struct{})
	go func() { io.Copy(io.Discard, st); close(gone) }()
	id, off := r.attach(req.Offset)
	defer r.detach(id)
	if err := s.reply(st, agent.Response{Offset: off}); err != nil {
		return err
	}
	buf := make([]byte, 32<<10)
	for {
		n, next, wait, eof := r.read(id, off, buf)
		if n > 0 {
			if _, err := st.Write(buf[:n]); err != nil {
				return err
			}
			off = next
			continue
		}
		if eof {
			// Half-close, then wait for the host to read to the end and
			// close its side: only then is the output delivered.
			st.Close()
			select {
			case <-gone:
			case <-time.After(5 * time.Second):
			}
			return nil
		}
		select {
		case <-wait:
		case <-gone:
			return nil
		}
	}
}

// handleWait answers wait and shutdown: the exit status once the service
// exited, then waits for the host to close the stream as its receipt.
func (s *Server) handleWait(st net.Conn, shutdown bool) error {
	gone := make(chan struct{})
	go func() { io.Copy(io.Discard, st); close(gone) }()
	if shutdown {
		if !s.stop() {
			s.reply(st, errResponse(agent.ErrNotStarted))
			s.log.Info("shutdown before start")
			s.offOnce.Do(func() { close(s.poweroff) })
			return nil
		}
	} else {
		if err := s.bootError(); err != nil {
			return s.reply(st, errResponse(fmt.Errorf("%w: %v", agent.ErrBootFailed, err)))
		}
		select {
		case <-s.started:
		case <-gone:
			return nil
		}
	}
	select {
	case <-s.exited:
	case <-gone:
		return nil
	}
	s.mu.Lock()
	exit := s.exit
	s.mu.Unlock()
	if err := s.reply(st, agent.Response{Exit: &exit}); err != nil {
		return err
	}
	select {
	case <-gone:
		s.ackOnce.Do(func() { close(s.reported) })
	case <-time.After(30 * time.Second):
	}
	return nil
}

// handleInput writes the host's frames to the service's stdin and
// terminal until the host closes the stream. After the exit they go
// nowhere.
func (s *Server) handleInput(st net.Conn) error {
	s.mu.Lock()
	phase, in, spec, pid := s.phase, s.input, s.spec, s.pid
	s.mu.Unlock()
	switch phase {
	case agent.PhaseRunning, agent.PhaseStopping, agent.PhaseExited:
	default:
		return s.reply(st, errResponse(agent.ErrNotStarted))
	}
	if in == nil {
		return s.reply(st, errResponse(fmt.Errorf("%w: the service has no stdin: it was started without stdin_open and tty", agent.ErrInvalid)))
	}
	if err := s.reply(st, agent.Response{}); err != nil {
		return err
	}
	var buf []byte
	for {
		typ, payload, err := agent.ReadFrame(st, buf)
		if err != nil {
			return nil // the host detached
		}
		buf = payload[:0]
		switch typ {
		case agent.FrameStdin:
			if spec.OpenStdin {
				in.Write(payload)
			}
		case agent.FrameStdinEOF:
			if spec.OpenStdin && !spec.Tty {
				in.Close()
			}
		case agent.FrameResize:
			if spec.Tty && len(payload) == 4 {
				pty.Setsize(in, &pty.Winsize{Rows: binary.BigEndian.Uint16(payload), Cols: binary.BigEndian.Uint16(payload[2:])})
			}
		case agent.FrameSignal:
			s.mu.Lock()
			running := s.phase == agent.PhaseRunning || s.phase == agent.PhaseStopping
			s.mu.Unlock()
			if sig, err := parseSignal(string(payload)); err == nil && running {
				unix.Kill(pid, sig)
			}
		}
	}
}

func (s *Server) handleSignal(st net.Conn, name string) error {
	sig, err := parseSignal(name)
	if err != nil {
		return s.reply(st, errResponse(err))
	}
	s.mu.Lock()
	pid, phase := s.pid, s.phase
	s.mu.Unlock()
	switch phase {
	case agent.PhaseRunning, agent.PhaseStopping:
	case agent.PhaseExited:
		return s.reply(st, errResponse(agent.ErrExited))
	default:
		return s.reply(st, errResponse(agent.ErrNotStarted))
	}
	if err := unix.Kill(pid, sig); err != nil {
		return s.reply(st, errResponse(fmt.Errorf("signal %s to pid %d: %w", name, pid, err)))
	}
	return s.reply(st, agent.Response{})
}
