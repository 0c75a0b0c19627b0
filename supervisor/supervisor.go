package supervisor

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

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/internal/flock"
	"github.com/vmcompose/vmcompose/network/netproc"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/reconcile"
	"github.com/vmcompose/vmcompose/vm"
)

// LockName is the file whose flock(2) the one supervisor of a project holds
// while it runs.
const LockName = "supervisor.lock"

// ErrSupervisorRunning: another supervisor holds the project's lock.
var ErrSupervisorRunning = errors.New("a supervisor already runs for this project")

// NetworkHook connects an instance to the project's networks before its VM
// is created: it adds NICs to spec.Networks, configures them in guest and
// publishes the service's ports, and returns what joining it again takes
// (nil when it joins no network). nil runs VMs without a network.
// Networks.Attach is the one vmcompose uses.
type NetworkHook func(ctx context.Context, p *types.Project, instance string, svc types.ServiceConfig, spec *vm.Spec, guest *agent.Spec) (*netproc.Record, error)

// Supervisor is a project's long-lived process: it owns the project's VMs,
// their agent connections, logs, healthchecks and restart policies, and
// carries out the CLI's requests. One runs per project (a flock in the
// state dir); it survives the CLI, and a new one adopts the VMs that still
// run.
type Supervisor struct {
	Dir     string
	Runtime *reconcile.Runtime
	Log     *slog.Logger
	Network NetworkHook
	// NetworkDetach, when set, disconnects an instance whose VM was
	// removed (network.Manager's Detach, which also unpublishes its ports).
	NetworkDetach func(instance string) error
	// NetworkReattach, when set, joins a recorded instance to the network
	// again before its VM boots (a restart, or a VM of an earlier
	// supervisor).
	NetworkReattach func(ctx context.Context, instance string, rec *netproc.Record) error
	// NetworkAttached, when set, reports whether the network still has a
	// recorded instance attached with its recorded addresses, so that its
	// running VM, whose NICs stay connected, is adopted as it runs
	// (Networks.Attached: the network process outlived the previous
	// supervisor). Unset, or false, boots the VM again on the network.
	NetworkAttached func(ctx context.Context, instance string, rec *netproc.Record) (bool, error)
	// NetworkRelease, when set, is called as the supervisor exits, its
	// lock still held, when none of the project's VMs runs: nothing needs
	// the network then (Networks.Release ends the network process), and a
	// VM booted later joins it again.
	NetworkRelease func()
	// NetworkWatch, when set, runs while the supervisor does and calls
	// lost each time the network process ends under attached instances
	// without having been asked to, once another runs with them attached
	// again (Networks.Watch). The supervisor ends their running VMs, whose
	// NICs cannot reconnect, and restart policies decide (networkLost).
	NetworkWatch func(ctx context.Context, lost func(netproc.Loss))
	// AgentWait bounds the wait for a booted VM's agent to answer;
	// zero is reconcile.DialAgent's minute.
	AgentWait time.Duration
	// Now and After are the clock; tests may replace them.
	Now   func() time.Time
	After func(time.Duration) <-chan time.Time

	ops  chan struct{} // one operation at a time
	ctx  context.Context
	quit context.CancelFunc

	// Version identifies the program; the CLI replaces a supervisor whose
	// version differs from its own (a rebuilt or upgraded vmcompose).
	Version string
	// LockWait is how long Run waits for the project's lock.
	LockWait time.Duration
	// IdleExit ends the supervisor once no VM of the project has run and
	// no request came for that long; zero never does.
	IdleExit time.Duration

	mu       sync.Mutex
	insts    map[string]*instance // by VM name
	name     string               // project name
	lastUsed time.Time
	// project is the one the last request loaded; projectReady is closed
	// once there is one (see guestSpec).
	project      *project.Project
	projectReady chan struct{}
	// sessions are the attached `vmcompose watch`es (watchers.go).
	sessions map[*watchSession]bool
}

// NewSupervisor returns the supervisor of the project whose state dir is
// dir. Set Runtime before Run.
func NewSupervisor(dir string, log *slog.Logger) *Supervisor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Supervisor{
		Dir: dir, Log: log, Now: time.Now, After: time.After, LockWait: 10 * time.Second,
		ops: make(chan struct{}, 1), insts: map[string]*instance{}, name: filepath.Base(dir),
		sessions: map[*watchSession]bool{},
	}
}

// Run takes the project's supervisor lock, adopts the VMs that run, and
// serves the CLI on the project's socket until ctx ends or a down leaves
// nothing to supervise. VMs keep running when it returns.
func (s *Supervisor) Run(ctx context.Context) error {
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	unlock, err := flock.LockWithin(ctx, filepath.Join(s.Dir, LockName), s.LockWait, ErrSupervisorRunning)
	if err != nil {
		return fmt.Errorf("supervisor: %w", err)
	}
	defer unlock()
	s.ctx, s.quit = context.WithCancel(ctx)
	defer s.quit()
	l, err := listenSupervisor(s.Dir)
	if err != nil {
		return err
	}
	defer os.Remove(SocketPath(s.Dir))
	if s.NetworkWatch != nil {
		go s.NetworkWatch(s.ctx, s.networkLost)
	}
	if err := s.adopt(s.ctx); err != nil {
		s.Log.Error("adopting VMs", "err", err)
	}
	srv := &http.Server{Handler: s.handler(), BaseContext: nil}
	go func() {
		<-s.ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	s.touch()
	if s.IdleExit > 0 {
		go s.exitWhenIdle()
	}
	s.Log.Info("supervisor serving", "dir", s.Dir, "pid", os.Getpid())
	err = srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	s.detachAll()
	if s.NetworkRelease != nil && !s.anyRunning() {
		s.NetworkRelease()
	}
	s.Log.Info("supervisor exits")
	return err
}

func (s *Supervisor) touch() {
	s.mu.Lock()
	s.lastUsed = s.Now()
	s.mu.Unlock()
}

// exitWhenIdle quits once nothing runs and nobody asked for IdleExit: a
// project whose services all ended needs no supervisor, and the next
// command starts one.
func (s *Supervisor) exitWhenIdle() {
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.After(min(s.IdleExit, 30*time.Second)):
		}
		busy := len(s.ops) > 0
		s.mu.Lock()
		// A watch follows the services the user starts later.
		busy = busy || len(s.sessions) > 0
		for _, in := range s.insts {
			in.mu.Lock()
			if in.rec.Phase == "running" || in.rec.Phase == "starting" || (in.done != nil && !isClosed(in.done)) {
				busy = true
			}
			in.mu.Unlock()
		}
		idle := s.Now().Sub(s.lastUsed) >= s.IdleExit
		s.mu.Unlock()
		if busy {
			s.touch()
			continue
		}
		if idle {
			s.Log.Info("nothing ran for a while: exiting", "idle", s.IdleExit)
			s.quit()
			return
		}
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// detachAll ends every watcher; the VMs keep running.
func (s *Supervisor) detachAll() {
	s.mu.Lock()
	insts := make([]*instance, 0, len(s.insts))
	for _, in := range s.insts {
		insts = append(insts, in)
	}
	s.mu.Unlock()
	for _, in := range insts {
		in.mu.Lock()
		done := in.done
		in.mu.Unlock()
		if done != nil {
			select {
			case <-done:
			case <-time.After(5 * time.Second):
			}
		}
	}
}

// adopt takes over the VMs of the record: watchers for those that run, a
// restart for those whose policy wants one and that died unsupervised.
func (s *Supervisor) adopt(ctx context.Context) error {
	o, err := reconcile.ObserveVMs(ctx, s.Dir, s.Runtime.Driver)
	if err != nil {
		return err
	}
	for _, rec := range o.Instances {
		in := s.instance(rec)
		st := o.VMs[rec.VM]
		switch {
		case st.State == vm.StateRunning && rec.Network != nil && s.NetworkReattach != nil && !s.networkKept(ctx, rec):
			// Its NICs were connected to a network process that has
			// ended (or no longer knows it), and QEMU does not reconnect
			// them: as networkLost does, end the VM and let its restart
			// policy decide whether it boots again on this one, with
			// the same addresses.
			s.Log.Warn("VM lost its network while no supervisor ran: ending it; its restart policy decides", "vm", rec.VM, "pid", st.Pid, "restart", rec.Restart.Mode)
			kctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := s.Runtime.Driver.Kill(kctx, rec.VM)
			cancel()
			if err != nil {
				return err
			}
			if s.NetworkDetach != nil {
				s.NetworkDetach(rec.VM) // attached otherwise, if at all
			}
			loss := &netproc.Loss{Status: "unknown: it ended while no supervisor ran", At: s.Now()}
			if rec.Restart.Restarts(nil, rec.Restarts, rec.Stopped) {
				in.update(func(r *reconcile.InstanceState) { r.NetworkLost, r.Restarts = loss, r.Restarts+1 })
				s.watchIf(in, true)
			} else {
				in.update(func(r *reconcile.InstanceState) {
					r.NetworkLost, r.Phase, r.ExitCode, r.FinishedAt, r.State = loss, "exited", nil, s.Now(), planner.Stopped
				})
			}
		case st.State == vm.StateRunning:
			s.Log.Info("adopting VM", "vm", rec.VM, "pid", st.Pid)
			s.watchIf(in, false)
		case rec.Phase == "running" || rec.Phase == "starting":
			if rec.Restart.Restarts(nil, rec.Restarts, rec.Stopped) {
				s.Log.Info("restarting VM that ended unsupervised", "vm", rec.VM)
				s.watchIf(in, true)
			} else {
				in.update(func(r *reconcile.InstanceState) { r.Phase = "exited"; r.FinishedAt = st.FinishedAt })
			}
		}
	}
	return s.save()
}

// networkLost ends the running VMs whose NICs were connected to a network
// process that died (Networks.Watch has started the next one and attached
// their instances to it again). QEMU's stream NICs do not reconnect, and a
// VM left running would show as up with a dead network, which no up
// repairs. So the VM is treated as a container that its runtime killed:
// it ends killed (137, when this supervisor started it and so saw the
// signal) and its restart policy decides. always and
// unless-stopped boot it again on the new network process, as on-failure
// does while its max_retries allow (the restart counts); no leaves it
// exited until the next up, start or restart. ps shows what happened
// (InstanceState.NetworkLost).
//
// A VM that boots in the instant between the death and this call may
// already be on the new process and is ended all the same: the safe side,
// since one left running on a dead NIC would stay broken.
func (s *Supervisor) networkLost(loss netproc.Loss) {
	s.Log.Warn("ending the running VMs whose network process died: their NICs are dead", "pid", loss.Pid, "instances", loss.Instances)
	note := loss
	note.Instances = nil
	for _, name := range loss.Instances {
		in := s.lookup(name)
		if in == nil {
			continue
		}
		st, err := s.Runtime.Driver.Inspect(s.ctx, name)
		if err != nil || st.State != vm.StateRunning {
			continue // it joins the new network process when it boots
		}
		r, _ := in.snapshot()
		s.Log.Warn("VM lost its network: ending it; its restart policy decides", "vm", name, "restart", r.Restart.Mode)
		in.update(func(r *reconcile.InstanceState) { r.NetworkLost = &note })
		kctx, cancel := context.WithTimeout(s.ctx, 10*time.Second)
		if err := s.Runtime.Driver.Kill(kctx, name); err != nil {
			s.Log.Error("ending a VM that lost its network", "vm", name, "err", err)
		}
		cancel()
		s.watchIf(in, false) // its watcher sees it end and applies the policy
	}
}

// anyRunning reports whether a VM of the project runs, or may. The
// one-off VMs of `vmcompose run` count too, though they are no instances
// of the supervisor's: their CLI attaches them to the project's network
// process and detaches them when they end, and a release in the meantime
// would cut their network (QEMU does not reconnect a NIC). So the network
// process outlives the supervisor while one runs, and ends after the last
// one with the CLI's Networks.Close, or with the next supervisor that
// finds nothing running.
func (s *Supervisor) anyRunning() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var statuses []vm.Status
	var err error
	if l, ok := s.Runtime.Driver.(vm.Lister); ok {
		statuses, err = l.List(ctx) // instances and one-offs
	} else {
		var o reconcile.Observation
		o, err = reconcile.ObserveVMs(ctx, s.Dir, s.Runtime.Driver)
		for _, st := range o.VMs {
			statuses = append(statuses, st)
		}
	}
	if err != nil {
		s.Log.Warn("observing VMs", "err", err)
		return true
	}
	for _, st := range statuses {
		if st.State == vm.StateRunning {
			return true
		}
	}
	return false
}

// networkKept reports whether a running VM's network outlived the previous
// supervisor with the VM attached.
func (s *Supervisor) networkKept(ctx context.Context, rec reconcile.InstanceState) bool {
	if s.NetworkAttached == nil {
		return false
	}
	ok, err := s.NetworkAttached(ctx, rec.VM, rec.Network)
	if err != nil {
		s.Log.Warn("asking the network about a VM", "vm", rec.VM, "err", err)
		return false
	}
	return ok
}

// instance returns the in-memory instance of a record, creating it.
func (s *Supervisor) instance(rec reconcile.InstanceState) *instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	if in, ok := s.insts[rec.VM]; ok {
		return in
	}
	in := &instance{s: s, rec: rec, changed: make(chan struct{}), healthReset: make(chan struct{}, 1)}
	in.health, _ = reconcile.ParseHealth(rec.Service, rec.Healthcheck)
	s.insts[rec.VM] = in
	return in
}

func (s *Supervisor) lookup(vmName string) *instance {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.insts[vmName]
}

func (s *Supervisor) forget(vmName string) {
	s.mu.Lock()
	delete(s.insts, vmName)
	s.mu.Unlock()
}

// save writes the record of every instance.
func (s *Supervisor) save() error {
	s.mu.Lock()
	st := reconcile.State{Project: s.name, Instances: []reconcile.InstanceState{}}
	for _, in := range s.insts {
		in.mu.Lock()
		st.Instances = append(st.Instances, in.rec)
		in.mu.Unlock()
	}
	s.mu.Unlock()
	slices.SortFunc(st.Instances, func(a, b reconcile.InstanceState) int {
		if a.Service != b.Service {
			if a.Service < b.Service {
				return -1
			}
			return 1
		}
		return a.Number - b.Number
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	err := reconcile.WriteState(s.Dir, st)
	if err != nil {
		s.Log.Error("saving state", "err", err)
	}
	return err
}

// GuestShutdown is the VM driver's guest shutdown hook: it asks the guest
// through the supervisor's agent connection (the channel takes one client)
// and returns once asked.
func (s *Supervisor) GuestShutdown(ctx context.Context, name, _ string) error {
	in := s.lookup(name)
	if in == nil {
		return fmt.Errorf("VM %s: not supervised", name)
	}
	in.mu.Lock()
	c := in.client
	in.mu.Unlock()
	if c == nil {
		return fmt.Errorf("VM %s: no agent connection", name)
	}
	go func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		c.Shutdown(sctx)
	}()
	return nil
}

// lockOps runs one operation at a time; a second one waits and says so.
func (s *Supervisor) lockOps(ctx context.Context, emit func(Event)) (func(), error) {
	select {
	case s.ops <- struct{}{}:
		return func() { <-s.ops }, nil
	default:
	}
	emit(Event{Message: "waiting for another vmcompose command on project " + s.name + " to finish"})
	select {
	case s.ops <- struct{}{}:
		return func() { <-s.ops }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// load reads the compose project as the CLI did.
func (s *Supervisor) load(ctx context.Context, req *Request) (*project.Project, error) {
	p, err := project.Load(ctx, req.Load)
	if err != nil {
		return nil, err
	}
	if p.Name != s.name {
		return nil, fmt.Errorf("project %q sent to the supervisor of project %q", p.Name, s.name)
	}
	s.loaded(p)
	return p, nil
}

// Ping is the supervisor's answer to GET /ping.
type Ping struct {
	Pid     int    `json:"pid"`
	Project string `json:"project"`
	Version string `json:"version"`
}

func (s *Supervisor) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(Ping{Pid: os.Getpid(), Project: s.name, Version: s.Version})
	})
	mux.HandleFunc("POST /quit", s.stream(func(ctx context.Context, _ *Request, emit func(Event)) error {
		// After the running operation; the VMs keep running.
		unlock, err := s.lockOps(ctx, emit)
		if err != nil {
			return err
		}
		defer unlock()
		s.Log.Info("asked to exit")
		go s.quit()
		return nil
	}))
	mux.HandleFunc("POST /up", s.stream(s.up))
	mux.HandleFunc("POST /down", s.stream(s.down))
	mux.HandleFunc("POST /start", s.stream(s.startServices))
	mux.HandleFunc("POST /stop", s.stream(s.stopServices))
	mux.HandleFunc("POST /restart", s.stream(s.restartServices))
	mux.HandleFunc("POST /kill", s.stream(s.kill))
	mux.HandleFunc("POST /exec", s.exec)
	mux.HandleFunc("POST /sync", s.sync)
	mux.HandleFunc("POST /restart-process", s.restartProcess)
	mux.HandleFunc("POST /watch", s.attachWatch)
	mux.HandleFunc("POST /launch", s.launchHeld)
	return mux
}

// stream answers an operation with its events, one JSON object a line.
func (s *Supervisor) stream(op func(context.Context, *Request, func(Event)) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req Request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, "request: "+err.Error(), http.StatusBadRequest)
			return
		}
		s.touch()
		defer s.touch()
		w.Header().Set("Content-Type", "application/x-ndjson")
		rc := http.NewResponseController(w)
		enc := json.NewEncoder(w)
		var mu sync.Mutex
		emit := func(e Event) {
			mu.Lock()
			defer mu.Unlock()
			enc.Encode(e)
			rc.Flush()
		}
		err := op(r.Context(), &req, emit)
		final := Event{Done: true}
		if err != nil {
			s.Log.Warn("operation failed", "path", r.URL.Path, "err", err)
			final.Error, final.Code = err.Error(), ErrorCodes.Of(err)
			var se *reconcile.ServiceError
			if errors.As(err, &se) {
				final.Service = se.Service
			}
		}
		emit(final)
	}
}
