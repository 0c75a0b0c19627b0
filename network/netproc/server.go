package netproc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/vmcompose/vmcompose/internal/errcode"
	"github.com/vmcompose/vmcompose/internal/flock"
	"github.com/vmcompose/vmcompose/internal/unixsock"
	"github.com/vmcompose/vmcompose/network"
)

// The project's network runs in a process of its own, the network process
// (`vmcompose network --state-dir DIR`), so that it outlives supervisors:
// QEMU's stream NICs connect once, at start, and a VM whose network ended
// must be booted again. The supervisor starts it on its first attach and
// talks HTTP/1.1 with JSON over <state dir>/network.sock:
//
//	GET  /ping              Ping
//	POST /attach            Record -> AttachReply (attach and publish)
//	POST /detach            DetachRequest (unpublish and detach)
//	GET  /instances/{name}  the instance's []network.NIC, 404 when unknown
//	POST /quit              QuitRequest -> QuitRequest (whether it quits)
//
// Errors are answered with a status other than 200 and WireError,
// whose Code names the network package's sentinel the error wraps, so
// that the client's error matches it with errors.Is (see errorCodes).
//
// /ping and /quit stay as they are across versions. Protocol counts
// changes of the rest: a supervisor keeps using a network process of
// another build while its ping answers with the same protocol; one of
// another protocol is asked to quit and replaced, and the VMs that were
// on it boot again on the new one.

// Protocol is the version of the network process's protocol. 2: the
// attach record's Endpoint.HostLoopback; a process of protocol 1 lets
// every guest reach the host's loopback.
const Protocol = 2

// The network process's files in the state dir.
const (
	SocketName = "network.sock"
	LockName   = "network.lock"
	LogName    = "network.log"
)

// ErrRunning: another network process holds the project's lock.
var ErrRunning = errors.New("a network process already runs for this project")

// Ping is the network process's answer to GET /ping.
type Ping struct {
	Pid int `json:"pid"`
	// Started is when it began serving: with Pid, it tells one network
	// process from the next.
	Started  time.Time `json:"started,omitzero"`
	Version  string    `json:"version"`
	Protocol int       `json:"protocol"`
	// Instances are the attached instances, sorted.
	Instances []string `json:"instances"`
}

// AttachReply answers an attach: the instance's NICs, and the
// project's networks with their subnets resolved.
type AttachReply struct {
	NICs     []network.NIC           `json:"nics"`
	Networks []network.NetworkConfig `json:"networks"`
}

// DetachRequest asks to detach an instance.
type DetachRequest struct {
	Instance string `json:"instance"`
}

// QuitRequest asks the network process to exit: only when no instance is
// attached if IfIdle is set. The answer's Quitting says whether it exits.
type QuitRequest struct {
	IfIdle   bool `json:"if_idle,omitempty"`
	Quitting bool `json:"quitting,omitempty"`
	Pid      int  `json:"pid,omitempty"` // of the process that quits
}

// WireError is the body of a failed request: the error's message, and
// the code of the sentinel it wraps, if any.
type WireError struct {
	Error string `json:"error"`
	Code  string `json:"code,omitempty"`
}

// errorCodes are the sentinels of package network that an error answered
// by the network process may wrap, by their code on the wire. Add new
// codes at will: a client that does not know a code keeps the message.
var errorCodes = errcode.Table{
	{Code: "port_in_use", Err: network.ErrPortInUse},
	{Code: "unknown_network", Err: network.ErrUnknownNetwork},
	{Code: "closed", Err: network.ErrClosed},
}

// SocketPath is the network process's socket of the project whose
// state dir is dir.
func SocketPath(dir string) string { return filepath.Join(dir, SocketName) }

// Server is the network process of a project: it holds the
// project's network.Manager while an instance is attached, and exits once
// none has been for IdleExit, or when asked.
type Server struct {
	Dir string
	Log *slog.Logger
	// Version identifies the build, for pings.
	Version string
	// LockWait is how long Run waits for the project's network lock (a
	// network process that exits may hold it a moment longer).
	LockWait time.Duration
	// IdleExit ends the process once no instance has been attached for
	// that long; zero never does.
	IdleExit time.Duration

	mu       sync.Mutex
	m        *network.Manager
	insts    map[string]bool
	started  time.Time
	idleFrom time.Time
	quitting bool
	ctx      context.Context
	quit     context.CancelFunc
}

// NewServer returns the network process of the project whose state
// dir is dir.
func NewServer(dir string, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{Dir: dir, Log: log, LockWait: 10 * time.Second, insts: map[string]bool{}}
}

// Run takes the project's network lock and serves until ctx ends, it is
// asked to quit, or it has been idle for IdleExit. The network ends with
// it.
func (ns *Server) Run(ctx context.Context) error {
	if err := os.MkdirAll(ns.Dir, 0o700); err != nil {
		return fmt.Errorf("network process: %w", err)
	}
	unlock, err := flock.LockWithin(ctx, filepath.Join(ns.Dir, LockName), ns.LockWait, ErrRunning)
	if err != nil {
		return fmt.Errorf("network process: %w", err)
	}
	defer unlock()
	ns.ctx, ns.quit = context.WithCancel(ctx)
	defer ns.quit()
	os.Remove(SocketPath(ns.Dir))
	l, err := unixsock.Listen(ns.Dir, SocketName)
	if err != nil {
		return fmt.Errorf("network socket: %w", err)
	}
	defer os.Remove(SocketPath(ns.Dir))
	srv := &http.Server{Handler: ns.handler()}
	go func() {
		<-ns.ctx.Done()
		os.Remove(SocketPath(ns.Dir)) // no new client reaches it
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	ns.mu.Lock()
	ns.started = time.Now()
	ns.idleFrom = ns.started
	ns.mu.Unlock()
	if ns.IdleExit > 0 {
		go ns.exitWhenIdle()
	}
	ns.Log.Info("network process serving", "dir", ns.Dir, "pid", os.Getpid(), "protocol", Protocol)
	err = srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	ns.mu.Lock()
	ns.quitting = true
	if ns.m != nil {
		ns.m.Close()
		ns.m = nil
	}
	ns.mu.Unlock()
	ns.Log.Info("network process exits")
	return err
}

func (ns *Server) exitWhenIdle() {
	for {
		select {
		case <-ns.ctx.Done():
			return
		case <-time.After(min(ns.IdleExit, 5*time.Second)):
		}
		ns.mu.Lock()
		idle := len(ns.insts) == 0 && time.Since(ns.idleFrom) >= ns.IdleExit
		if idle {
			ns.quitting = true
		}
		ns.mu.Unlock()
		if idle {
			ns.Log.Info("no instance attached for a while: exiting", "idle", ns.IdleExit)
			ns.quit()
			return
		}
	}
}

func (ns *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) {
		ns.mu.Lock()
		p := Ping{Pid: os.Getpid(), Started: ns.started, Version: ns.Version, Protocol: Protocol, Instances: []string{}}
		for name := range ns.insts {
			p.Instances = append(p.Instances, name)
		}
		ns.mu.Unlock()
		slices.Sort(p.Instances)
		json.NewEncoder(w).Encode(p)
	})
	mux.HandleFunc("POST /attach", func(w http.ResponseWriter, r *http.Request) {
		var rec Record
		if !decode(w, r, &rec) {
			return
		}
		a, err := ns.attach(&rec)
		answer(w, a, err)
	})
	mux.HandleFunc("POST /detach", func(w http.ResponseWriter, r *http.Request) {
		var d DetachRequest
		if !decode(w, r, &d) {
			return
		}
		answer(w, struct{}{}, ns.detach(d.Instance))
	})
	mux.HandleFunc("GET /instances/{name}", func(w http.ResponseWriter, r *http.Request) {
		ns.mu.Lock()
		var nics []network.NIC
		ok := ns.m != nil && ns.insts[r.PathValue("name")]
		if ok {
			nics, ok = ns.m.NICs(r.PathValue("name"))
		}
		ns.mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(WireError{Error: "not attached"})
			return
		}
		json.NewEncoder(w).Encode(nics)
	})
	mux.HandleFunc("POST /quit", func(w http.ResponseWriter, r *http.Request) {
		var q QuitRequest
		if !decode(w, r, &q) {
			return
		}
		ns.mu.Lock()
		quit := !q.IfIdle || len(ns.insts) == 0
		if quit {
			ns.quitting = true
			os.Remove(SocketPath(ns.Dir))
		}
		n := len(ns.insts)
		ns.mu.Unlock()
		if quit {
			ns.Log.Info("asked to exit", "attached", n)
			defer ns.quit()
		}
		a := QuitRequest{Quitting: quit}
		if quit {
			a.Pid = os.Getpid()
		}
		json.NewEncoder(w).Encode(a)
	})
	return mux
}

// errQuitting answers the requests that reach a network process on its
// way out; the client starts the next one.
var errQuitting = errors.New("the network process is exiting")

// attach joins an instance to the project's networks, making them when
// none is attached, and publishes its ports.
func (ns *Server) attach(rec *Record) (*AttachReply, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.quitting {
		return nil, errQuitting
	}
	if ns.m == nil {
		m, err := network.New(ns.ctx, network.Config{Project: rec.Project, StateDir: filepath.Join(ns.Dir, "net"), Networks: rec.Networks, Logger: ns.Log})
		if err != nil {
			return nil, err
		}
		ns.m = m
		ns.Log.Info("network up", "project", rec.Project, "networks", len(rec.Networks))
	}
	for _, c := range rec.Networks {
		if _, ok := ns.m.Subnet(c.Name); !ok {
			return nil, fmt.Errorf("network %q is new: run `vmcompose down` then `vmcompose up` to change the project's networks", c.Name)
		}
	}
	instance := rec.Endpoint.Instance
	_, was := ns.m.NICs(instance)
	nics, err := ns.m.Attach(rec.Endpoint, rec.Attachments)
	if err != nil {
		ns.closeIfIdle()
		return nil, err
	}
	if _, err := ns.m.Publish(instance, rec.Ports); err != nil {
		if !was {
			ns.m.Detach(instance)
			ns.closeIfIdle()
		}
		return nil, err // it names the service and the port
	}
	ns.insts[instance] = true
	a := &AttachReply{NICs: nics}
	for _, c := range rec.Networks {
		if sub, ok := ns.m.Subnet(c.Name); ok {
			c.Subnet = sub.String()
		}
		a.Networks = append(a.Networks, c)
	}
	ns.Log.Info("attached", "instance", instance, "again", was)
	return a, nil
}

func (ns *Server) detach(instance string) error {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.m == nil || !ns.insts[instance] {
		return nil
	}
	ns.m.Unpublish(instance)
	err := ns.m.Detach(instance)
	delete(ns.insts, instance)
	ns.Log.Info("detached", "instance", instance, "left", len(ns.insts))
	ns.closeIfIdle()
	return err
}

// closeIfIdle ends the networks once no instance is attached, so that the
// next attach makes them as it says; ns.mu is held.
func (ns *Server) closeIfIdle() {
	if len(ns.insts) > 0 || ns.m == nil {
		return
	}
	ns.m.Close()
	ns.m = nil
	ns.idleFrom = time.Now()
	ns.Log.Info("network down: no instance attached")
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := json.NewDecoder(r.Body).Decode(v); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(WireError{Error: "request: " + err.Error()})
		return false
	}
	return true
}

func answer(w http.ResponseWriter, v any, err error) {
	if err != nil {
		status := http.StatusUnprocessableEntity
		if errors.Is(err, errQuitting) {
			status = http.StatusServiceUnavailable
		}
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(WireError{Error: err.Error(), Code: errorCodes.Of(err)})
		return
	}
	json.NewEncoder(w).Encode(v)
}
