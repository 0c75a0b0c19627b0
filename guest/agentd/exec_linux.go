package agentd

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/guest/resolve"
)

// serviceSpec returns the service's spec, or an empty one before Start
// (exec and healthchecks then run as root with the default environment).
func (s *Server) serviceSpec() agent.Spec {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.spec == nil {
		return agent.Spec{}
	}
	return *s.spec
}

func (s *Server) handleExec(st net.Conn, es *agent.ExecSpec) error {
	if es == nil {
		return s.reply(st, errResponse(fmt.Errorf("%w: exec without a spec", agent.ErrInvalid)))
	}
	p, err := processSpec(s.serviceSpec(), es.Env, es.User, es.WorkingDir, es.Argv)
	if err != nil {
		return s.reply(st, errResponse(err))
	}
	var (
		stdin      io.WriteCloser
		outs       []*os.File
		ptmx       *os.File
		childFiles []*os.File
	)
	if es.Tty {
		m, tty, err := pty.Open()
		if err != nil {
			return s.reply(st, errResponse(fmt.Errorf("pty: %w", err)))
		}
		if es.Rows > 0 && es.Cols > 0 {
			pty.Setsize(m, &pty.Winsize{Rows: es.Rows, Cols: es.Cols})
		}
		if _, ok := resolve.Lookup(p.env, "TERM"); !ok {
			p.env = append(p.env, "TERM=xterm")
		}
		p.stdin, p.stdout, p.stderr, p.tty = tty, tty, tty, true
		ptmx, stdin, outs = m, m, []*os.File{m}
		childFiles = []*os.File{tty}
	} else {
		inR, inW, err := os.Pipe()
		if err != nil {
			return s.reply(st, errResponse(err))
		}
		outR, outW, err := os.Pipe()
		if err != nil {
			return s.reply(st, errResponse(err))
		}
		errR, errW, err := os.Pipe()
		if err != nil {
			return s.reply(st, errResponse(err))
		}
		p.stdin, p.stdout, p.stderr = inR, outW, errW
		stdin, outs = inW, []*os.File{outR, errR}
		childFiles = []*os.File{inR, outW, errW}
	}
	pid, wait, err := s.reaper.start(p)
	for _, f := range childFiles {
		f.Close()
	}
	if err != nil {
		stdin.Close()
		for _, f := range outs {
			f.Close()
		}
		return s.reply(st, errResponse(err))
	}
	s.log.Debug("exec started", "pid", pid, "argv", es.Argv, "tty", es.Tty)
	if err := s.reply(st, agent.Response{Pid: pid}); err != nil {
		unix.Kill(-pid, unix.SIGKILL)
	}

	var wmu sync.Mutex
	writeFrame := func(typ byte, b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return agent.WriteFrame(st, typ, b)
	}
	var copiers sync.WaitGroup
	for i, f := range outs {
		typ := agent.FrameStdout
		if i == 1 {
			typ = agent.FrameStderr
		}
		copiers.Add(1)
		go func() {
			defer copiers.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := f.Read(buf)
				if n > 0 && writeFrame(typ, buf[:n]) != nil {
					return
				}
				if err != nil {
					return // EOF, or EIO from a pty whose other side is gone
				}
			}
		}()
	}

	exited := make(chan struct{})
	go func() {
		// Frames from the host; a broken stream before the exit kills the
		// process: an exec does not outlive its host.
		defer stdin.Close()
		var buf []byte
		for {
			typ, payload, err := agent.ReadFrame(st, buf)
			if err != nil {
				select {
				case <-exited:
				default:
					unix.Kill(-pid, unix.SIGKILL)
				}
				return
			}
			buf = payload[:0]
			switch typ {
			case agent.FrameStdin:
				stdin.Write(payload)
			case agent.FrameStdinEOF:
				if ptmx == nil {
					stdin.Close()
				}
			case agent.FrameResize:
				if ptmx != nil && len(payload) == 4 {
					pty.Setsize(ptmx, &pty.Winsize{
						Rows: binary.BigEndian.Uint16(payload),
						Cols: binary.BigEndian.Uint16(payload[2:]),
					})
				}
			case agent.FrameSignal:
				if sig, err := parseSignal(string(payload)); err == nil {
					unix.Kill(pid, sig)
				}
			}
		}
	}()

	ws := <-wait
	close(exited)
	waitTimeout(&copiers, drainTimeout)
	for _, f := range outs {
		f.Close()
	}
	copiers.Wait()
	exit := exitStatus(ws)
	b, _ := json.Marshal(exit)
	return writeFrame(agent.FrameExit, b)
}

func waitTimeout(wg *sync.WaitGroup, d time.Duration) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
	}
}

// healthOutputMax is docker's limit on kept healthcheck output.
const healthOutputMax = 4096

// capped keeps the first max bytes written to it.
type capped struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if room := c.max - c.buf.Len(); room > 0 {
		c.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (s *Server) handleHealth(st net.Conn, req agent.Request) error {
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	p, err := processSpec(s.serviceSpec(), nil, "", "", req.Argv)
	if err != nil {
		return s.reply(st, errResponse(err))
	}
	r, w, err := os.Pipe()
	if err != nil {
		return s.reply(st, errResponse(err))
	}
	p.stdout, p.stderr = w, w
	pid, wait, err := s.reaper.start(p)
	w.Close()
	if err != nil {
		r.Close()
		return s.reply(st, errResponse(err))
	}
	out := &capped{max: healthOutputMax}
	copied := make(chan struct{})
	go func() { io.Copy(out, r); close(copied) }()
	var res agent.HealthResult
	select {
	case ws := <-wait:
		res.ExitCode = exitStatus(ws).Code
	case <-time.After(timeout):
		unix.Kill(-pid, unix.SIGKILL)
		<-wait
		res.ExitCode, res.TimedOut = -1, true
	}
	select {
	case <-copied:
	case <-time.After(drainTimeout):
	}
	r.Close()
	<-copied
	out.mu.Lock()
	res.Output = out.buf.String()
	out.mu.Unlock()
	if res.TimedOut {
		res.Output = fmt.Sprintf("Health check exceeded timeout (%v)", timeout)
	}
	return s.reply(st, agent.Response{Health: &res})
}
