package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/reconcile"
)

// SyncAnswer ends a sync's connection, as one agent header: the guest's
// result, or why there is none.
type SyncAnswer struct {
	Result *agent.SyncResult `json:"result,omitempty"`
	Error  string            `json:"error,omitempty"`
	Code   string            `json:"code,omitempty"` // ErrorCodes
}

// sync applies a batch of files in a running instance (Request.Services,
// Index, Sync). After a 200 answer the connection carries the batch as
// agent.WriteSyncEntries writes it, forwarded to the instance's agent as it
// comes, and then a SyncAnswer back. Other answers are a plain-text error.
func (s *Supervisor) sync(w http.ResponseWriter, r *http.Request) {
	var req Request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Sync == nil || len(req.Services) != 1 {
		http.Error(w, "sync: want one service and a target", http.StatusBadRequest)
		return
	}
	service := req.Services[0]
	if err := agent.CheckSyncTarget(req.Sync.Target); err != nil {
		http.Error(w, fmt.Sprintf("service %q: %v", service, err), http.StatusBadRequest)
		return
	}
	name, c, conn, brw, ok := s.hijackAgent(w, r, "sync", service, req.Index)
	if !ok {
		return
	}
	defer conn.Close()
	res, err := c.SyncStream(s.ctx, *req.Sync, brw.Reader)
	answer := SyncAnswer{Result: &res}
	if err != nil {
		answer = SyncAnswer{Error: fmt.Sprintf("syncing into %s: %v", name, err), Code: ErrorCodes.Of(err)}
	}
	agent.WriteHeader(conn, answer)
}

// Sync sends a batch of entries to a running instance of the project
// whose state dir is dir, through its supervisor (POST /sync): req names
// the service, Index (0 is 1) and the Sync target and user. The contents
// are read from the entries as they are sent; the guest's result says what
// it skipped and why.
func Sync(ctx context.Context, dir string, req *Request, entries []agent.SyncEntry) (agent.SyncResult, error) {
	conn, br, err := hijacked(ctx, dir, "/sync", req)
	if err != nil {
		return agent.SyncResult{}, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	sent := make(chan error, 1)
	var local []agent.SyncSkip
	go func() {
		var err error
		if local, err = agent.WriteSyncEntries(conn, entries); err != nil {
			conn.Close() // the guest waits for bytes that will not come
		}
		sent <- err
	}()
	var answer SyncAnswer
	err = agent.ReadHeader(br, &answer)
	conn.Close() // a writer the guest stopped reading from ends
	if ctx.Err() != nil {
		return agent.SyncResult{}, ctx.Err()
	}
	if err != nil {
		if werr := <-sent; werr != nil {
			return agent.SyncResult{}, fmt.Errorf("sync: %w", werr)
		}
		return agent.SyncResult{}, fmt.Errorf("sync: the supervisor's answer: %w", err)
	}
	if answer.Error != "" {
		return agent.SyncResult{}, ErrorCodes.Rebuild(answer.Error, answer.Code)
	}
	if answer.Result == nil {
		return agent.SyncResult{}, errors.New("sync: the supervisor answered without a result")
	}
	res := *answer.Result
	<-sent // done: the guest answered after the end marker
	res.Skipped = append(local, res.Skipped...)
	return res, nil
}

// hijacked sends an HTTP request to the supervisor and returns the
// connection once it answered 200, for the operation's own stream.
// Its body is what follows on the connection (a hijacked one's is not
// framed: it reads until the connection ends).
func hijacked(ctx context.Context, dir, path string, req *Request) (net.Conn, io.Reader, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return nil, nil, err
	}
	conn, err := DialSupervisor(ctx, dir)
	if err != nil {
		return nil, nil, fmt.Errorf("talking to the supervisor: %w", err)
	}
	hreq, _ := http.NewRequest("POST", "http://supervisor"+path, bytes.NewReader(body))
	if err := hreq.Write(conn); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("talking to the supervisor: %w", err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, hreq)
	if err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("talking to the supervisor: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		conn.Close()
		return nil, nil, errors.New(strings.TrimSpace(string(b)))
	}
	return conn, resp.Body, nil
}

// ProcessRestart is one instance whose service process was restarted.
type ProcessRestart struct {
	Instance string `json:"instance"`
	Pid      int    `json:"pid"`
}

// restartProcess restarts the service process of the running instances of
// Request.Services (Index: that replica alone) in place, through their
// agents: their VMs keep running, no restart policy counts it, and the
// healthcheck starts over as after a container restart. It answers a JSON
// list of ProcessRestart, or a plain-text error.
func (s *Supervisor) restartProcess(w http.ResponseWriter, r *http.Request) {
	var req Request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Services) == 0 {
		http.Error(w, "restart-process: want the services", http.StatusBadRequest)
		return
	}
	s.touch()
	var done []ProcessRestart
	for _, in := range s.instancesOf(r.Context(), req.Services, req.Index) {
		done1, err := s.restartIn(r.Context(), in)
		if err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		done = append(done, done1)
	}
	if len(done) == 0 {
		http.Error(w, fmt.Sprintf("restart-process: no instance of %s runs", strings.Join(req.Services, ", ")), http.StatusConflict)
		return
	}
	json.NewEncoder(w).Encode(done)
}

// instancesOf returns the running instances of services (of replica index
// alone when it is not 0), by name.
func (s *Supervisor) instancesOf(ctx context.Context, services []string, index int) []*instance {
	if o, err := reconcile.ObserveVMs(ctx, s.Dir, s.Runtime.Driver); err == nil {
		s.adoptObserved(o)
	}
	s.mu.Lock()
	var ins []*instance
	for _, in := range s.insts {
		in.mu.Lock()
		if slices.Contains(services, in.rec.Service) && (index == 0 || in.rec.Number == index) && in.rec.Phase != "exited" {
			ins = append(ins, in)
		}
		in.mu.Unlock()
	}
	s.mu.Unlock()
	slices.SortFunc(ins, func(a, b *instance) int { return strings.Compare(a.rec.VM, b.rec.VM) })
	return ins
}

// restartIn restarts one instance's service process and starts its
// healthcheck over.
func (s *Supervisor) restartIn(ctx context.Context, in *instance) (ProcessRestart, error) {
	in.await(ctx, condStarted)
	in.mu.Lock()
	c, name, svc := in.client, in.rec.VM, in.rec.Service
	in.mu.Unlock()
	if c == nil {
		return ProcessRestart{}, reconcile.ServiceErrorf(svc, "is not running (instance %s)", name)
	}
	pid, err := c.Restart(ctx)
	if err != nil {
		return ProcessRestart{}, reconcile.ServiceErrorf(svc, "restarting the process of %s: %w", name, err)
	}
	s.Log.Info("service process restarted", "vm", name, "pid", pid)
	if in.health != nil {
		in.update(func(r *reconcile.InstanceState) { r.Health = "starting" })
		select {
		case in.healthReset <- struct{}{}:
		default:
		}
	}
	return ProcessRestart{Instance: name, Pid: pid}, nil
}

// RestartProcess restarts the service process of the running instances
// of req.Services (req.Index: that replica alone) in place, through the
// supervisor of the project whose state dir is dir (POST
// /restart-process).
func RestartProcess(ctx context.Context, dir string, req *Request) ([]ProcessRestart, error) {
	conn, br, err := hijacked(ctx, dir, "/restart-process", req)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var done []ProcessRestart
	if err := json.NewDecoder(br).Decode(&done); err != nil {
		return nil, fmt.Errorf("restart-process: the supervisor's answer: %w", err)
	}
	return done, nil
}
