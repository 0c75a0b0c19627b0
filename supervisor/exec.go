package supervisor

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/reconcile"
)

// agentOf returns the agent connection of a service's instance (index 0
// is 1) once it started, or nil when it does not run.
func (s *Supervisor) agentOf(ctx context.Context, service string, index int) (string, *agent.Client) {
	name := planner.InstanceName(service, max(index, 1))
	in := s.lookup(name)
	if in == nil {
		// A supervisor that just started adopts what runs.
		if o, err := reconcile.ObserveVMs(ctx, s.Dir, s.Runtime.Driver); err == nil {
			s.adoptObserved(o)
		}
		in = s.lookup(name)
	}
	if in == nil {
		return name, nil
	}
	in.mu.Lock()
	if in.launch != nil {
		// Prepared, and waiting for a watch session's files.
		defer in.mu.Unlock()
		return name, in.client
	}
	in.mu.Unlock()
	in.await(ctx, condStarted)
	in.mu.Lock()
	defer in.mu.Unlock()
	return name, in.client
}

// hijackAgent finds the agent of a service's instance (index 0 is 1) and
// takes the HTTP connection over for op's stream, after a 200 answer; the
// caller closes conn. When the instance does not run, or the connection
// cannot be taken, it answers the error itself and ok is false.
func (s *Supervisor) hijackAgent(w http.ResponseWriter, r *http.Request, op, service string, index int) (name string, c *agent.Client, conn net.Conn, brw *bufio.ReadWriter, ok bool) {
	name, c = s.agentOf(r.Context(), service, index)
	if c == nil {
		http.Error(w, fmt.Sprintf("service %q is not running (instance %s)", service, name), http.StatusConflict)
		return name, nil, nil, nil, false
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, op+": "+err.Error(), http.StatusInternalServerError)
		return name, nil, nil, nil, false
	}
	s.touch()
	brw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n")
	brw.Flush()
	return name, c, conn, brw, true
}

// exec runs a process next to a service over the supervisor's agent
// connection. After a 200 answer the connection carries agent exec frames:
// stdin, stdin EOF, resize and signal from the CLI; stdout, stderr and the
// exit status to it. Other answers are a plain-text error.
func (s *Supervisor) exec(w http.ResponseWriter, r *http.Request) {
	var req Request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Exec == nil || len(req.Services) != 1 {
		http.Error(w, "exec: want one service and a command", http.StatusBadRequest)
		return
	}
	name, c, conn, brw, ok := s.hijackAgent(w, r, "exec", req.Services[0], req.Index)
	if !ok {
		return
	}
	defer conn.Close()

	ctx, cancel := context.WithCancel(s.ctx)
	defer cancel()
	var wmu sync.Mutex
	frame := func(typ byte) io.Writer {
		return writerFunc(func(p []byte) (int, error) {
			wmu.Lock()
			defer wmu.Unlock()
			if err := agent.WriteFrame(conn, typ, p); err != nil {
				return 0, err
			}
			return len(p), nil
		})
	}
	pr, pw := io.Pipe()
	proc, err := c.Exec(ctx, *req.Exec, agent.ExecIO{Stdin: pr, Stdout: frame(agent.FrameStdout), Stderr: frame(agent.FrameStderr)})
	if err != nil {
		code := 126 // docker's status for a command that cannot be run
		if errors.Is(err, agent.ErrCommandNotFound) {
			code = 127
		}
		st, _ := json.Marshal(agent.ExitStatus{Code: code})
		frame(agent.FrameStderr).Write([]byte(fmt.Sprintf("vmcompose: exec in %s: %v\n", name, err)))
		frame(agent.FrameExit).Write(st)
		return
	}
	go func() {
		// The CLI's frames; the connection's end kills the process.
		defer cancel()
		br := bufio.NewReader(brw.Reader)
		var buf []byte
		for {
			typ, payload, err := agent.ReadFrame(br, buf)
			if err != nil {
				pw.Close()
				return
			}
			buf = payload[:0]
			switch typ {
			case agent.FrameStdin:
				pw.Write(payload)
			case agent.FrameStdinEOF:
				pw.Close()
			case agent.FrameResize:
				if len(payload) == 4 {
					proc.Resize(binary.BigEndian.Uint16(payload), binary.BigEndian.Uint16(payload[2:]))
				}
			case agent.FrameSignal:
				proc.Signal(string(payload))
			}
		}
	}()
	st, err := proc.Wait()
	if err != nil {
		frame(agent.FrameStderr).Write([]byte(fmt.Sprintf("vmcompose: exec in %s: %v\n", name, err)))
		st = agent.ExitStatus{Code: 255}
	}
	b, _ := json.Marshal(st)
	frame(agent.FrameExit).Write(b)
}
