package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/reconcile"
	"github.com/vmcompose/vmcompose/vm"
)

// instance is one supervised VM: its record, its agent connection while it
// runs, and the watcher goroutine that boots it, streams its logs, runs its
// healthcheck and applies its restart policy.
type instance struct {
	s      *Supervisor
	health *reconcile.Health

	mu  sync.Mutex
	rec reconcile.InstanceState
	// files are rec.Guest.Files with their contents, which the record
	// does not hold; nil until known (see guestSpec).
	files   []agent.File
	client  *agent.Client
	changed chan struct{} // closed and replaced on every change
	// healthReset starts the healthcheck over (its start period, its
	// failures) after the service process restarted in place.
	healthReset chan struct{}
	// launch is set while the guest is prepared and waits for a watch
	// session to sync its files (startService); closing it launches.
	launch chan struct{}
	// booted says why the VM booted last ("created", "started" or
	// "restarted"), for a watch session.
	booted string
	cancel context.CancelFunc
	done   chan struct{} // closed when the watcher ends; nil before one ran
}

// update changes the record, wakes the waiters and saves the state.
func (in *instance) update(f func(*reconcile.InstanceState)) {
	in.mu.Lock()
	f(&in.rec)
	close(in.changed)
	in.changed = make(chan struct{})
	in.mu.Unlock()
	in.s.save()
}

func (in *instance) snapshot() (reconcile.InstanceState, <-chan struct{}) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.rec, in.changed
}

// Conditions an instance can be waited for; the depends_on ones are
// compose's.
const (
	condStarted   = types.ServiceConditionStarted
	condHealthy   = types.ServiceConditionHealthy
	condCompleted = types.ServiceConditionCompletedSuccessfully
	condRunning   = "running" // up --wait without a healthcheck
)

// await returns once the instance meets cond, or why it never will.
func (in *instance) await(ctx context.Context, cond string) error {
	for {
		r, changed := in.snapshot()
		svc := r.Service
		switch {
		case r.Error != "":
			return reconcile.ServiceErrorf(svc, "%s", r.Error)
		case r.Phase == "starting" || r.Phase == "created" || r.Phase == "":
		case cond == condStarted || cond == "":
			return nil
		case cond == condHealthy:
			if in.health == nil {
				return reconcile.ServiceErrorf(svc, "depended on as service_healthy, but it has no healthcheck: add one, or use condition service_started")
			}
			switch {
			case r.Health == "healthy":
				return nil
			case r.Health == "unhealthy":
				return reconcile.ServiceErrorf(svc, "is unhealthy")
			case r.Phase == "exited":
				return reconcile.ServiceErrorf(svc, "exited with code %s before it was healthy", codeString(r.ExitCode))
			}
		case cond == condCompleted:
			if r.Phase == "exited" {
				if r.ExitCode != nil && *r.ExitCode == 0 {
					return nil
				}
				return reconcile.ServiceErrorf(svc, "did not complete successfully: exit code %s", codeString(r.ExitCode))
			}
		case cond == condRunning:
			if r.Phase == "running" {
				return nil
			}
			if r.ExitCode != nil && *r.ExitCode == 0 {
				return nil // a job that completed
			}
			return reconcile.ServiceErrorf(svc, "exited with code %s", codeString(r.ExitCode))
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return reconcile.ServiceErrorf(svc, "waiting to be %s: %w", conditionWord(cond), ctx.Err())
		}
	}
}

func conditionWord(cond string) string {
	switch cond {
	case condHealthy:
		return "healthy"
	case condCompleted:
		return "completed"
	}
	return "running"
}

// bootReason says why the VM booted, as a watch session is told.
func (in *instance) bootReason() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.booted == "" {
		return "started"
	}
	return in.booted
}

func codeString(c *int) string {
	if c == nil {
		return "unknown (the VM ended without reporting one)"
	}
	return fmt.Sprint(*c)
}

// watchIf starts the watcher unless one runs; boot says the VM must be
// started first (otherwise it runs and the watcher adopts it).
func (s *Supervisor) watchIf(in *instance, boot bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.done != nil {
		select {
		case <-in.done:
		default:
			return
		}
	}
	ctx, cancel := context.WithCancel(s.ctx)
	in.cancel, in.done = cancel, make(chan struct{})
	if boot {
		in.rec.Phase, in.rec.Error, in.rec.ExitCode, in.rec.Signal = "starting", "", nil, 0
		close(in.changed)
		in.changed = make(chan struct{})
	}
	go s.watch(ctx, in, boot, in.done)
}

// watch runs an instance until its process ends for good: boot (when
// asked), connect, start the service unless it runs, stream its logs, run
// its healthcheck, wait for the exit, and restart as the policy says.
func (s *Supervisor) watch(ctx context.Context, in *instance, boot bool, done chan struct{}) {
	defer close(done)
	name := in.rec.VM
	log := s.Log.With("vm", name)
	d := s.Runtime.Driver
	backoff := 0
	for {
		if boot {
			in.update(func(r *reconcile.InstanceState) {
				r.Phase, r.Error, r.ExitCode, r.Signal = "starting", "", nil, 0
				if in.health != nil {
					r.Health = "starting"
				}
			})
			if r, _ := in.snapshot(); r.Network != nil && s.NetworkReattach != nil {
				if err := s.NetworkReattach(ctx, name, r.Network); err != nil {
					in.update(func(r *reconcile.InstanceState) { r.Phase, r.Error = "exited", "joining the network: "+err.Error() })
					return
				}
			}
			// The files first: a VM that waited for them would hold
			// its memory for nothing.
			if _, err := s.guestSpec(ctx, in); err != nil {
				if ctx.Err() == nil {
					in.update(func(r *reconcile.InstanceState) { r.Phase, r.Error = "exited", err.Error() })
				}
				return
			}
			if err := d.Start(ctx, name); err != nil {
				err = s.Runtime.ExplainStart(ctx, err)
				if ctx.Err() == nil {
					in.update(func(r *reconcile.InstanceState) { r.Phase, r.Error = "exited", "starting the VM: "+err.Error() })
				}
				return
			}
		}
		ran, code, err := s.runOnce(ctx, in, log)
		if ctx.Err() != nil {
			return // the supervisor exits: the VM keeps running
		}
		if err != nil {
			log.Warn("service failed", "err", err)
			kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			d.Kill(kctx, name)
			cancel()
			if r, _ := in.snapshot(); errors.Is(err, reconcile.ErrTerminal) || !r.Restart.Restarts(nil, r.Restarts, r.Stopped) {
				in.update(func(r *reconcile.InstanceState) { r.Phase, r.Error, r.FinishedAt = "exited", err.Error(), s.Now() })
				return
			}
			// A failure a retry may fix (the agent did not answer in
			// time, its connection broke): the restart policy decides, as
			// for a VM that died without an exit status.
			in.update(func(r *reconcile.InstanceState) { r.Phase, r.ExitCode, r.FinishedAt = "exited", nil, s.Now() })
			code = nil
		}
		r, _ := in.snapshot()
		if !r.Restart.Restarts(code, r.Restarts, r.Stopped) {
			return
		}
		if ran > 10*time.Second {
			backoff = 0
		}
		delay := Backoff(backoff)
		backoff++
		log.Info("restarting", "policy", r.Restart.Mode, "exit", codeString(code), "after", delay)
		select {
		case <-s.After(delay):
		case <-ctx.Done():
			return
		}
		if r, _ := in.snapshot(); r.Stopped {
			return
		}
		in.update(func(r *reconcile.InstanceState) { r.Restarts++ })
		in.mu.Lock()
		in.booted = "restarted"
		in.mu.Unlock()
		boot = true
	}
}

// runOnce attaches to a running VM and follows it until its service ended
// and the VM is off. err is for a service that did not run: terminal
// (reconcile.ErrTerminal) when no restart can fix it (a spec the guest
// refuses, a failed boot), else a failure a retry may fix.
func (s *Supervisor) runOnce(ctx context.Context, in *instance, log interface {
	Info(string, ...any)
	Warn(string, ...any)
}) (ran time.Duration, code *int, err error) {
	d := s.Runtime.Driver
	name := in.rec.VM
	st, err := d.Inspect(ctx, name)
	if err != nil {
		return 0, nil, err
	}
	begin := s.Now()
	ended := func() (time.Duration, *int, error) {
		fin, _ := d.Inspect(context.WithoutCancel(ctx), name)
		killed := 0
		if code == nil && fin.Signal != 0 {
			// The VMM was killed under its service, as docker reports a
			// killed container: 128+N.
			killed = fin.Signal
			c := 128 + killed
			code = &c
		}
		in.mu.Lock()
		in.client = nil
		in.mu.Unlock()
		in.update(func(r *reconcile.InstanceState) {
			r.Phase, r.ExitCode, r.FinishedAt, r.State, r.Signal = "exited", code, fin.FinishedAt, planner.Stopped, killed
			if r.FinishedAt.IsZero() {
				r.FinishedAt = s.Now()
			}
		})
		return s.Now().Sub(begin), code, nil
	}
	if st.State != vm.StateRunning {
		return ended()
	}
	dctx, cancel := ctx, context.CancelFunc(func() {})
	if s.AgentWait > 0 {
		dctx, cancel = context.WithTimeout(ctx, s.AgentWait)
	}
	client, err := reconcile.DialAgent(dctx, st)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return 0, nil, ctx.Err()
		}
		if cur, ierr := d.Inspect(ctx, name); ierr == nil && cur.State != vm.StateRunning {
			return ended() // the VM died while booting
		}
		return 0, nil, fmt.Errorf("VM %s: %w (boot messages: %s)", name, err, st.Console)
	}
	defer client.Close()
	status, err := client.Status(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("VM %s: agent status: %w", name, err)
	}
	switch status.Phase {
	case agent.PhaseFailed:
		return 0, nil, reconcile.Terminal(fmt.Errorf("the guest could not boot: %s", status.BootError))
	case agent.PhaseBooting, agent.PhaseReady:
		spec, err := s.guestSpec(ctx, in)
		if err != nil {
			return 0, nil, err
		}
		if err := s.startService(ctx, in, client, spec, in.bootReason()); err != nil {
			if r := reconcile.GuestRefusal(err); r != nil {
				return 0, nil, r
			}
			if ctx.Err() == nil {
				if cur, ierr := d.Inspect(ctx, name); ierr == nil && cur.State != vm.StateRunning {
					return ended()
				}
			}
			return 0, nil, fmt.Errorf("starting the service: %w", err)
		}
	case agent.PhasePrepared:
		// Its supervisor ended while it waited for a watch session's
		// files: that session went with it.
		if err := client.Launch(ctx); err != nil {
			return 0, nil, fmt.Errorf("starting the service: %w", err)
		}
	default:
		log.Info("adopted", "phase", status.Phase, "pid", st.Pid)
	}
	in.mu.Lock()
	in.client = client
	in.mu.Unlock()
	in.update(func(r *reconcile.InstanceState) {
		r.Phase, r.StartedAt, r.Error, r.State = "running", st.StartedAt, "", planner.Running
		if in.health != nil && r.Health == "" {
			r.Health = "starting"
		}
	})

	slog, err := openServiceLog(s.Dir, name, s.Now)
	if err != nil {
		log.Warn("service log", "err", err)
	}
	var copies sync.WaitGroup
	if slog != nil {
		defer slog.Close()
		for _, stream := range []agent.Output{agent.Stdout, agent.Stderr} {
			r, _, err := client.Attach(ctx, stream, slog.offset(st.StartedAt, string(stream)))
			if err != nil {
				log.Warn("attaching", "stream", stream, "err", err)
				continue
			}
			copies.Add(1)
			go func() {
				defer copies.Done()
				defer r.Close()
				io.Copy(slog.writer(string(stream)), r)
				slog.flush(string(stream))
			}()
		}
	}
	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	if in.health != nil {
		go s.healthLoop(hctx, in, client)
	}
	exit, werr := client.Wait(ctx)
	if ctx.Err() != nil {
		return 0, nil, ctx.Err()
	}
	if werr == nil {
		c := exit.Code
		code = &c
	}
	copied := make(chan struct{})
	go func() { copies.Wait(); close(copied) }()
	select {
	case <-copied:
	case <-time.After(5 * time.Second):
	}
	hcancel()
	// The guest powers off once the exit status and the output were
	// delivered; make sure it did.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = vm.Wait(wctx, d, name)
	cancel()
	if err != nil && ctx.Err() == nil {
		kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		d.Kill(kctx, name)
		cancel()
	}
	return ended()
}

// healthChecker runs a healthcheck command in the guest; *agent.Client is
// one.
type healthChecker interface {
	Health(ctx context.Context, argv []string, timeout time.Duration) (agent.HealthResult, error)
}

// healthLoop runs the healthcheck as docker does: every interval (every
// start_interval during start_period), failures during start_period do not
// count until the first success, retries failures in a row are unhealthy.
func (s *Supervisor) healthLoop(ctx context.Context, in *instance, client healthChecker) {
	h := in.health
	begin := s.Now()
	fails := 0
	for {
		r, _ := in.snapshot()
		starting := s.Now().Sub(begin) < h.StartPeriod && r.Health != "healthy"
		wait := h.Interval
		if starting {
			wait = h.StartInterval
		}
		select {
		case <-s.After(wait):
		case <-in.healthReset:
			begin, fails = s.Now(), 0
			continue
		case <-ctx.Done():
			return
		}
		res, err := client.Health(ctx, h.Argv, h.Timeout)
		if ctx.Err() != nil {
			return
		}
		if err == nil && res.ExitCode == 0 {
			fails = 0
			if r.Health != "healthy" {
				in.update(func(r *reconcile.InstanceState) { r.Health = "healthy" })
			}
			continue
		}
		if starting {
			continue
		}
		fails++
		s.Log.Debug("healthcheck failed", "vm", r.VM, "exit", res.ExitCode, "output", res.Output, "err", err)
		if fails >= h.Retries && r.Health != "unhealthy" {
			in.update(func(r *reconcile.InstanceState) { r.Health = "unhealthy" })
		}
	}
}

// stopTimeout is how long each step of a stop may take: -t when given,
// else the stop grace period and some time to power off.
func stopTimeout(rec reconcile.InstanceState, t int) time.Duration {
	if t >= 0 {
		return time.Duration(t) * time.Second
	}
	grace := agent.DefaultStopGracePeriod
	if rec.Guest.StopGracePeriod != nil {
		grace = *rec.Guest.StopGracePeriod
	}
	return grace + 5*time.Second
}

// stopInstance stops the VM and keeps it; no restart policy brings it back.
func (s *Supervisor) stopInstance(ctx context.Context, in *instance, timeout int) error {
	in.update(func(r *reconcile.InstanceState) { r.Stopped = true })
	r, _ := in.snapshot()
	if err := s.Runtime.Driver.Stop(ctx, r.VM, stopTimeout(r, timeout)); err != nil && !errors.Is(err, vm.ErrNotFound) {
		return reconcile.ServiceErrorf(r.Service, "stopping %s: %w", r.VM, err)
	}
	in.mu.Lock()
	done, cancel := in.done, in.cancel
	in.mu.Unlock()
	if done != nil {
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			// The VM is off; a watcher still there waits out a restart
			// backoff: end it.
			cancel()
			select {
			case <-done:
			case <-ctx.Done():
				return ctx.Err()
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	in.update(func(r *reconcile.InstanceState) {
		if r.Phase != "exited" {
			r.Phase = "exited"
		}
	})
	return nil
}

// startInstance boots a created or stopped VM and returns once its service
// runs (or has already ended).
func (s *Supervisor) startInstance(ctx context.Context, in *instance) error {
	in.update(func(r *reconcile.InstanceState) { r.Stopped, r.Restarts, r.NetworkLost = false, 0, nil })
	r, _ := in.snapshot()
	in.mu.Lock()
	in.booted = "started"
	if r.Phase == "created" {
		in.booted = "created"
	}
	in.mu.Unlock()
	if st, err := s.Runtime.Driver.Inspect(ctx, r.VM); err == nil && st.State == vm.StateRunning {
		s.watchIf(in, false)
	} else {
		s.watchIf(in, true)
	}
	return in.await(ctx, condStarted)
}

// removeInstance stops and deletes the VM, its scratch disk and its log.
func (s *Supervisor) removeInstance(ctx context.Context, in *instance, timeout int) error {
	if err := s.stopInstance(ctx, in, timeout); err != nil {
		return err
	}
	r, _ := in.snapshot()
	if err := s.Runtime.Driver.Remove(ctx, r.VM); err != nil {
		return reconcile.ServiceErrorf(r.Service, "removing %s: %w", r.VM, err)
	}
	if s.NetworkDetach != nil {
		if err := s.NetworkDetach(r.VM); err != nil {
			s.Log.Warn("detaching from the network", "vm", r.VM, "err", err)
		}
	}
	os.Remove(LogPath(s.Dir, r.VM))
	os.Remove(filepath.Join(LogDir(s.Dir), r.VM+".offsets"))
	if err := reconcile.RemoveAnonVolumes(s.Dir, r.VM); err != nil {
		s.Log.Warn("removing a VM's volumes", "vm", r.VM, "err", err)
	}
	s.forget(r.VM)
	s.save()
	return nil
}
