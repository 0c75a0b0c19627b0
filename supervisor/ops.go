package supervisor

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"

	"github.com/compose-spec/compose-go/v2/types"
	"golang.org/x/sync/errgroup"

	"github.com/vmcompose/vmcompose/network/netproc"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/reconcile"
)

// up converges the project: pull what is missing, observe, plan, execute,
// and with Wait, wait until every service is running or healthy.
func (s *Supervisor) up(ctx context.Context, req *Request, emit func(Event)) error {
	unlock, err := s.lockOps(ctx, emit)
	if err != nil {
		return err
	}
	defer unlock()
	p, err := s.load(ctx, req)
	if err != nil {
		return err
	}
	o, err := reconcile.ObserveVMs(ctx, s.Dir, s.Runtime.Driver)
	if err != nil {
		return err
	}
	desired := planner.Desired{Project: p.Project, Problems: p.Problems, SharedVolumes: reconcile.SharedVolumes(p)}
	if desired.Contents, err = s.contentDigests(p); err != nil {
		return err
	}
	opts := planner.Options{
		Services: req.Services, NoDeps: req.NoDeps, ForceRecreate: req.ForceRecreate, AlwaysRecreateDeps: req.AlwaysRecreateDeps,
		NoRecreate: req.NoRecreate, RemoveOrphans: req.RemoveOrphans, Scale: req.Scale,
	}
	// What cannot run is refused before anything is pulled or booted; the
	// digests change what is recreated, not what is blocked.
	plan, err := planner.Up(desired, o.Observed(), opts)
	if err != nil {
		return err
	}
	if err := plan.Blocked(); err != nil {
		return err
	}
	if desired.Digests, err = s.pull(ctx, p, plan, emit); err != nil {
		return err
	}
	if o, err = reconcile.ObserveVMs(ctx, s.Dir, s.Runtime.Driver); err != nil { // as they are after the pull
		return err
	}
	if plan, err = planner.Up(desired, o.Observed(), opts); err != nil {
		return err
	}
	if err := plan.Blocked(); err != nil {
		return err
	}
	for _, w := range reconcile.VolumeWarnings(p) {
		emit(Event{Message: "warning: " + w})
	}
	for _, w := range plan.Warnings {
		emit(Event{Message: "warning: " + w})
	}
	s.Log.Info("up", "plan", plan.String())
	s.adoptObserved(o)
	if err := s.shareVolumes(ctx, p, plan, req.Timeout, emit); err != nil {
		return err
	}
	if err := s.execute(ctx, p, plan, o, req.Timeout, emit); err != nil {
		return err
	}
	if req.Wait {
		if err := s.waitUp(ctx, p, plan, emit); err != nil {
			return err
		}
	}
	if req.RunFor != "" {
		return s.awaitRun(ctx, p, plan, req.RunFor, emit)
	}
	return nil
}

// shareVolumes makes the volumes that become shared in this plan shared
// directories before any operation runs: the VMs that have one as a disk
// are removed first (the plan recreates them), then its data moves from
// the disk image into the directory, and the user is told.
func (s *Supervisor) shareVolumes(ctx context.Context, p *project.Project, plan *planner.Plan, timeout int, emit func(Event)) error {
	for _, sh := range plan.Shares {
		for _, name := range sh.Holders {
			if in := s.lookup(name); in != nil {
				emit(Event{Instance: name, Message: fmt.Sprintf("Removing (volume %q becomes shared)", sh.Volume)})
				if err := s.removeInstance(ctx, in, timeout); err != nil {
					return err
				}
			}
		}
		moved, err := reconcile.ShareVolume(ctx, p, sh.Volume, s.Dir, s.Runtime.Drivers)
		if err != nil {
			return err
		}
		msg := fmt.Sprintf("volume %q is shared by %s: a directory on the host", sh.Volume, sh.Users())
		if moved {
			msg = fmt.Sprintf("volume %q is now shared by %s: moved its data from its disk image into a directory", sh.Volume, sh.Users())
		}
		emit(Event{Message: msg})
	}
	return nil
}

// awaitRun waits until the depends_on conditions of service, the one a
// `vmcompose run` is for, hold on the instances the plan keeps, as docker
// compose run waits before it starts its container.
func (s *Supervisor) awaitRun(ctx context.Context, p *project.Project, plan *planner.Plan, service string, emit func(Event)) error {
	svc, ok := p.Services[service]
	if !ok {
		if svc, ok = p.DisabledServices[service]; !ok {
			return fmt.Errorf("no such service: %s", service)
		}
	}
	for _, op := range plan.Ops {
		cfg, isDep := svc.DependsOn[op.Service]
		if !isDep || op.Kind == planner.Remove || op.Kind == planner.Stop || op.Kind == planner.Blocked {
			continue
		}
		in := s.lookup(op.Instance)
		if in == nil {
			continue
		}
		if err := in.await(ctx, cfg.Condition); err != nil {
			if !cfg.Required {
				continue
			}
			return fmt.Errorf("service %q: dependency failed to meet %s: %w", service, cfg.Condition, err)
		}
		if cfg.Condition != condStarted {
			emit(Event{Instance: op.Instance, Message: map[string]string{condHealthy: "Healthy", condCompleted: "Exited (0)"}[cfg.Condition]})
		}
	}
	return nil
}

// adoptObserved makes sure every observed instance has its in-memory
// record, and every running one a watcher: the level, not the events.
func (s *Supervisor) adoptObserved(o reconcile.Observation) {
	for _, rec := range o.Instances {
		in := s.instance(rec)
		if o.VMs[rec.VM].State == "running" {
			s.watchIf(in, false)
		}
	}
}

// pull gets the image of every service the plan runs, so that the final
// plan sees their digests.
func (s *Supervisor) pull(ctx context.Context, p *project.Project, plan *planner.Plan, emit func(Event)) (map[string]string, error) {
	all, svcs := p.AllServices(), types.Services{}
	for _, op := range plan.Ops {
		if svc, ok := all[op.Service]; ok && op.Kind != planner.Remove {
			svcs[op.Service] = svc
		}
	}
	var mu sync.Mutex
	digests := map[string]string{}
	g := new(errgroup.Group)
	g.SetLimit(4)
	for name, svc := range svcs {
		svc.Image = planner.ImageName(p.Name, svc)
		if svc.Image == "" {
			continue
		}
		g.Go(func() error {
			img, err := s.Runtime.Image(ctx, svc)
			if err != nil {
				return &reconcile.ServiceError{Service: name, Err: err}
			}
			mu.Lock()
			digests[name] = img.Digest.String()
			mu.Unlock()
			return nil
		})
	}
	return digests, g.Wait()
}

// execute carries the plan out through reconcile's Execute, with the
// supervisor's instances doing each operation and answering for the
// depends_on conditions.
func (s *Supervisor) execute(ctx context.Context, p *project.Project, plan *planner.Plan, o reconcile.Observation, timeout int, emit func(Event)) error {
	return reconcile.Execute(ctx, p.Project, plan, &operations{s: s, p: p, o: o, timeout: timeout, emit: emit})
}

// operations is the Executor of one plan.
type operations struct {
	s       *Supervisor
	p       *project.Project
	o       reconcile.Observation
	timeout int
	emit    func(Event)
}

func (x *operations) Do(ctx context.Context, op planner.Op) error {
	return x.s.do(ctx, x.p, op, x.o, x.timeout, x.emit)
}

func (x *operations) Await(ctx context.Context, instance, condition string) error {
	in := x.s.lookup(instance)
	if in == nil {
		return nil
	}
	return in.await(ctx, condition)
}

// do carries out one operation.
func (s *Supervisor) do(ctx context.Context, p *project.Project, op planner.Op, o reconcile.Observation, timeout int, emit func(Event)) error {
	say := func(msg string) { emit(Event{Instance: op.Instance, Message: msg}) }
	in := s.lookup(op.Instance)
	switch op.Kind {
	case planner.Blocked:
		return reconcile.ServiceErrorf(op.Service, "%s", op.Reason)
	case planner.Nothing:
		if in != nil {
			if st := o.VMs[op.Instance]; st.State == "running" {
				s.watchIf(in, false)
			}
		}
		say("Running")
		return nil
	case planner.Create:
		say("Creating")
		if err := s.create(ctx, p, op, say); err != nil {
			return err
		}
		say("Started")
		return nil
	case planner.Recreate:
		say("Recreating (" + op.Reason + ")")
		if in != nil {
			if err := s.removeInstance(ctx, in, timeout); err != nil {
				return err
			}
		}
		if err := s.create(ctx, p, op, say); err != nil {
			return err
		}
		say("Started")
		return nil
	case planner.Start, planner.Restart:
		if in == nil {
			return reconcile.ServiceErrorf(op.Service, "%s: not supervised", op.Instance)
		}
		if op.Kind == planner.Restart {
			say("Restarting")
			if err := s.stopInstance(ctx, in, timeout); err != nil {
				return err
			}
		} else {
			say("Starting")
		}
		if err := s.startInstance(ctx, in); err != nil {
			return err
		}
		say("Started")
		return nil
	case planner.Stop:
		if in == nil {
			return nil
		}
		say("Stopping")
		if err := s.stopInstance(ctx, in, timeout); err != nil {
			return err
		}
		say("Stopped")
		return nil
	case planner.Remove:
		say("Removing")
		if in == nil {
			in = s.instance(reconcile.InstanceState{VM: op.Instance, Instance: planner.Instance{Service: op.Service, Number: op.Number}})
		}
		if err := s.removeInstance(ctx, in, timeout); err != nil {
			return err
		}
		say("Removed")
		return nil
	}
	return fmt.Errorf("operation %d: unknown kind %q", op.ID, op.Kind)
}

// create prepares, records, creates and starts a new instance; say
// passes on what the user is told of its volumes.
func (s *Supervisor) create(ctx context.Context, p *project.Project, op planner.Op, say func(string)) error {
	svc, ok := p.Services[op.Service]
	if !ok {
		svc, ok = p.DisabledServices[op.Service]
	}
	if !ok {
		return reconcile.ServiceErrorf(op.Service, "not in the project")
	}
	prep, err := s.Runtime.Prepare(ctx, reconcile.Service{Project: p, Name: op.Instance, Config: svc, StateDir: s.Dir})
	if err != nil {
		return &reconcile.ServiceError{Service: op.Service, Err: unwrapService(err)}
	}
	for _, n := range prep.Notices {
		say(n)
	}
	health, err := reconcile.ParseHealth(op.Service, svc.HealthCheck)
	if err != nil {
		return err
	}
	restart, err := planner.ParseRestart(svc)
	if err != nil {
		return reconcile.ServiceErrorf(op.Service, "%w", err)
	}
	contents, err := s.contentDigests(p)
	if err != nil {
		return err
	}
	fields, err := planner.InstanceFields(svc, prep.Image.Digest.String(), contents, op.Shared)
	if err != nil {
		return err
	}
	spec, guest := prep.Spec, prep.Guest
	// The files' contents stay in memory: the record is saved.
	files := guest.Files
	guest.Files = withoutContent(files)
	spec.DieWithController = false
	var netrec *netproc.Record
	if s.Network != nil {
		if netrec, err = s.Network(ctx, p.Project, op.Instance, svc, &spec, &guest); err != nil {
			return &reconcile.ServiceError{Service: op.Service, Err: fmt.Errorf("network: %w", err)}
		}
	}
	rec := reconcile.InstanceState{
		Instance: planner.Instance{Service: op.Service, Number: op.Number, State: planner.Stopped, Hash: op.Hash, Fields: fields},
		VM:       op.Instance, Phase: "created", Image: svc.Image, Command: svc.Command,
		Guest: guest, Healthcheck: svc.HealthCheck, Restart: restart, Network: netrec,
	}
	// Record first: a supervisor that dies after Create finds the VM with
	// its hash; one that dies before finds no VM and drops the record.
	in := s.instance(rec)
	in.mu.Lock()
	in.rec, in.health, in.files = rec, health, files
	in.mu.Unlock()
	s.save()
	if err := s.Runtime.Driver.Create(ctx, spec); err != nil {
		if s.NetworkDetach != nil {
			s.NetworkDetach(op.Instance)
		}
		s.forget(op.Instance)
		s.save()
		return reconcile.ServiceErrorf(op.Service, "creating %s: %w", op.Instance, err)
	}
	return s.startInstance(ctx, in)
}

// unwrapService drops the `service "x": ` prefix Prepare adds, since
// ServiceError adds it again.
func unwrapService(err error) error {
	if u := errors.Unwrap(err); u != nil {
		return u
	}
	return err
}

// waitUp waits until every instance the plan keeps is running, healthy
// when it has a healthcheck, or completed with 0 when a service depends on
// it with service_completed_successfully.
func (s *Supervisor) waitUp(ctx context.Context, p *project.Project, plan *planner.Plan, emit func(Event)) error {
	completes := map[string]bool{}
	for _, svc := range p.Services {
		for dep, cfg := range svc.DependsOn {
			if cfg.Condition == types.ServiceConditionCompletedSuccessfully {
				completes[dep] = true
			}
		}
	}
	var g errgroup.Group
	var mu sync.Mutex
	var errs []error
	for _, op := range plan.Ops {
		if op.Kind == planner.Remove || op.Kind == planner.Stop || op.Kind == planner.Blocked {
			continue
		}
		in := s.lookup(op.Instance)
		if in == nil {
			continue
		}
		cond := condRunning
		switch {
		case completes[op.Service]:
			cond = condCompleted
		case in.health != nil:
			cond = condHealthy
		}
		g.Go(func() error {
			if err := in.await(ctx, cond); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return err
			}
			emit(Event{Instance: op.Instance, Message: map[string]string{condRunning: "Running", condHealthy: "Healthy", condCompleted: "Exited (0)"}[cond]})
			return nil
		})
	}
	g.Wait()
	if len(errs) > 0 {
		slices.SortFunc(errs, func(a, b error) int { return compareStrings(a.Error(), b.Error()) })
		return errs[0]
	}
	return nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// down removes the project's instances in reverse dependency order; when
// nothing is left, the supervisor cleans its state dir and exits.
func (s *Supervisor) down(ctx context.Context, req *Request, emit func(Event)) error {
	unlock, err := s.lockOps(ctx, emit)
	if err != nil {
		return err
	}
	defer unlock()
	p, err := s.load(ctx, req)
	if err != nil {
		return err
	}
	o, err := reconcile.ObserveVMs(ctx, s.Dir, s.Runtime.Driver)
	if err != nil {
		return err
	}
	s.adoptObserved(o)
	plan, err := planner.Down(planner.Desired{Project: p.Project}, o.Observed(), planner.DownOptions{
		Services: req.Services, RemoveOrphans: req.RemoveOrphans,
	})
	if err != nil {
		return err
	}
	for _, w := range plan.Warnings {
		emit(Event{Message: "warning: " + w})
	}
	if err := s.execute(ctx, p, plan, o, req.Timeout, emit); err != nil {
		return err
	}
	if len(req.Services) > 0 {
		return nil
	}
	left, err := reconcile.ObserveVMs(ctx, s.Dir, s.Runtime.Driver)
	if req.Volumes && err == nil && len(left.Instances) == 0 {
		lines, err := reconcile.RemoveProjectVolumes(p, s.Dir)
		for _, l := range lines {
			emit(Event{Message: l})
		}
		if err != nil {
			return err
		}
	}
	if err == nil && len(left.Instances) == 0 {
		os.Remove(s.Dir + "/" + reconcile.StateFile)
		os.RemoveAll(LogDir(s.Dir))
		os.Remove(reconcile.VMRoot(s.Dir)) // only when empty: run VMs may live there
		s.Log.Info("nothing left to supervise")
		go s.quit()
	}
	return nil
}

// selected returns the instances of the named services (all when none),
// sorted by name.
func (s *Supervisor) selected(ctx context.Context, p *project.Project, services []string) ([]*instance, reconcile.Observation, error) {
	for _, name := range services {
		if _, ok := p.Services[name]; !ok {
			if _, ok := p.DisabledServices[name]; !ok {
				return nil, reconcile.Observation{}, fmt.Errorf("no such service: %s", name)
			}
		}
	}
	o, err := reconcile.ObserveVMs(ctx, s.Dir, s.Runtime.Driver)
	if err != nil {
		return nil, o, err
	}
	s.adoptObserved(o)
	var out []*instance
	for _, rec := range o.Instances {
		if len(services) == 0 || slices.Contains(services, rec.Service) {
			out = append(out, s.instance(rec))
		}
	}
	return out, o, nil
}

// startServices starts the stopped instances of the named services, in
// dependency order, waiting for depends_on conditions as up does.
func (s *Supervisor) startServices(ctx context.Context, req *Request, emit func(Event)) error {
	unlock, err := s.lockOps(ctx, emit)
	if err != nil {
		return err
	}
	defer unlock()
	return s.startLocked(ctx, req, emit)
}

// stopServices stops the running instances of the named services, the
// ones that depend on others first.
func (s *Supervisor) stopServices(ctx context.Context, req *Request, emit func(Event)) error {
	unlock, err := s.lockOps(ctx, emit)
	if err != nil {
		return err
	}
	defer unlock()
	return s.stopLocked(ctx, req, emit)
}

func (s *Supervisor) startLocked(ctx context.Context, req *Request, emit func(Event)) error {
	return s.planAndExecute(ctx, req, emit, func(d planner.Desired, o planner.Observed) (*planner.Plan, error) {
		return planner.PlanStart(d, o, planner.Options{Services: req.Services})
	})
}

func (s *Supervisor) stopLocked(ctx context.Context, req *Request, emit func(Event)) error {
	return s.planAndExecute(ctx, req, emit, func(d planner.Desired, o planner.Observed) (*planner.Plan, error) {
		return planner.PlanStop(d, o, planner.DownOptions{Services: req.Services})
	})
}

// planAndExecute observes the named services, asks the planner and
// carries the plan out.
func (s *Supervisor) planAndExecute(ctx context.Context, req *Request, emit func(Event), plan func(planner.Desired, planner.Observed) (*planner.Plan, error)) error {
	p, err := s.load(ctx, req)
	if err != nil {
		return err
	}
	_, o, err := s.selected(ctx, p, req.Services)
	if err != nil {
		return err
	}
	pl, err := plan(planner.Desired{Project: p.Project}, o.Observed())
	if err != nil {
		return err
	}
	return s.execute(ctx, p, pl, o, req.Timeout, emit)
}

// restartServices stops, then starts the named services.
func (s *Supervisor) restartServices(ctx context.Context, req *Request, emit func(Event)) error {
	unlock, err := s.lockOps(ctx, emit)
	if err != nil {
		return err
	}
	defer unlock()
	if err := s.stopLocked(ctx, req, emit); err != nil {
		return err
	}
	return s.startLocked(ctx, req, emit)
}

// kill sends a signal (SIGKILL by default) to the service processes of the
// named services. SIGKILL and SIGTERM count as a stop for restart policies.
func (s *Supervisor) kill(ctx context.Context, req *Request, emit func(Event)) error {
	p, err := s.load(ctx, req)
	if err != nil {
		return err
	}
	insts, _, err := s.selected(ctx, p, req.Services)
	if err != nil {
		return err
	}
	sig := req.Signal
	if sig == "" {
		sig = "SIGKILL"
	}
	for _, in := range insts {
		in.mu.Lock()
		c, rec := in.client, in.rec
		in.mu.Unlock()
		if c == nil {
			continue
		}
		switch sig {
		case "SIGKILL", "KILL", "9", "SIGTERM", "TERM", "15":
			in.update(func(r *reconcile.InstanceState) { r.Stopped = true })
		}
		if err := c.Signal(ctx, sig); err != nil {
			return reconcile.ServiceErrorf(rec.Service, "signalling %s: %w", rec.VM, err)
		}
		emit(Event{Instance: rec.VM, Message: "Killed (" + sig + ")"})
	}
	return nil
}
