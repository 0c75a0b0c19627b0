package planner

import (
	"cmp"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
)

// State is what an observed instance is doing.
type State string

// The states the planner distinguishes.
const (
	Running State = "running"
	Stopped State = "stopped" // created, exited or stopped: the VM exists but does not run
)

// Instance is one VM that exists now.
type Instance struct {
	Service string `json:"service"`
	Number  int    `json:"number"`
	State   State  `json:"state"`
	// Hash and Fields are the ServiceFields the VM was created from.
	Hash   string `json:"hash"`
	Fields Fields `json:"fields,omitempty"`
}

// Name is the instance's name in its project: <service>-<number>.
func (i Instance) Name() string { return InstanceName(i.Service, i.Number) }

// InstanceName names replica number n (1-based) of a service.
func InstanceName(service string, n int) string { return fmt.Sprintf("%s-%d", service, n) }

// instanceName matches the VMs of compose services, <service>-<number>;
// `vmcompose run` VMs (<service>-run-<hex>) are not instances.
var (
	instanceName = regexp.MustCompile(`^(.+)-([1-9][0-9]*)$`)
	runName      = regexp.MustCompile(`-run-[0-9a-f]{6}$`)
)

// ParseInstance splits a VM name into service and number.
func ParseInstance(name string) (service string, number int, ok bool) {
	if runName.MatchString(name) {
		return "", 0, false
	}
	m := instanceName.FindStringSubmatch(name)
	if m == nil {
		return "", 0, false
	}
	n, err := strconv.Atoi(m[2])
	if err != nil {
		return "", 0, false
	}
	return m[1], n, true
}

// Observed is what exists now.
type Observed struct {
	Instances []Instance `json:"instances"`
}

// Desired is what the compose file wants.
type Desired struct {
	Project *types.Project
	// Digests holds the image digest of a service's image reference, for
	// the services whose image is known locally.
	Digests map[string]string
	// Problems holds, by service, why up must refuse to run it for what
	// only I/O can tell (a bind mount of a host socket, say); project.Load
	// finds them. Up blocks those services with these reasons.
	Problems map[string][]string
	// SharedVolumes holds the keys of the named volumes that are shared
	// already, directories on the host (reconcile.SharedVolumes): a
	// shared volume stays one.
	SharedVolumes map[string]bool
	// Contents holds, by ContentKey, a digest of the content of every
	// top-level secret and config the services use, keyed with a secret
	// of the host so that the digest, recorded in state.json as a field,
	// tells nothing of a short password (reconcile.ContentDigests). A
	// changed digest recreates the services that use it.
	Contents map[string]string
}

// Options are the up flags that change the plan, as docker compose has
// them.
type Options struct {
	Services      []string // SERVICE... arguments; empty means all
	NoDeps        bool     // --no-deps: leave dependencies alone
	ForceRecreate bool     // --force-recreate: the named services (all when none are named)
	// AlwaysRecreateDeps (--always-recreate-deps) extends ForceRecreate to
	// the dependencies the named services pull in; docker compose leaves
	// them alone otherwise.
	AlwaysRecreateDeps bool
	NoRecreate         bool           // --no-recreate
	RemoveOrphans      bool           // --remove-orphans
	Scale              map[string]int // --scale SERVICE=N
}

// Up plans the operations that take observed to desired: every selected
// service ends with its replicas running its current config. It performs
// no I/O.
func Up(desired Desired, observed Observed, opts Options) (*Plan, error) {
	if opts.ForceRecreate && opts.NoRecreate {
		return nil, fmt.Errorf("--force-recreate and --no-recreate cannot be used together: choose one")
	}
	p := desired.Project
	selected, err := selectServices(p, opts.Services, opts.NoDeps)
	if err != nil {
		return nil, err
	}
	g, err := NewGraph(selected)
	if err != nil {
		return nil, err
	}
	have := byService(observed)
	b := newBuilder(p.Name, false)
	running := runningOthers(have, selected)
	problems, warnings := check(desired, selected, opts.Scale, running)
	b.plan.Warnings = append(b.plan.Warnings, warnings...)
	shared := sharedVolumes(desired, selected, opts.Scale, running)
	shares, kept := newShares(desired, selected, shared, have, opts.NoRecreate)
	for name, msgs := range kept {
		problems[name] = append(problems[name], msgs...)
	}

	blocked := map[string]string{}
	bounced := map[string]bool{} // services whose VMs are recreated or restarted
	for _, name := range g.topological() {
		svc := selected[name]
		want, err := replicas(svc, opts.Scale)
		if err != nil {
			return nil, err
		}
		reason := strings.Join(problems[name], "; ")
		for _, dep := range g.deps[g.index[name]] {
			if _, ok := blocked[g.names[dep.to]]; ok && reason == "" && dep.dep.Required {
				reason = fmt.Sprintf("depends on %s, which cannot run", g.names[dep.to])
			}
		}
		if reason != "" {
			blocked[name] = reason
			for n := 1; n <= want; n++ {
				b.add(Op{Kind: Blocked, Service: name, Number: n, Reason: reason})
			}
			continue
		}
		sharedHere := sharedOf(svc, shared)
		fields, err := InstanceFields(svc, desired.Digests[name], desired.Contents, sharedHere)
		if err != nil {
			return nil, err
		}
		hash := fields.Hash()
		restartFor := ""
		for _, dep := range g.deps[g.index[name]] {
			if dep.dep.Restart && bounced[g.names[dep.to]] {
				restartFor = g.names[dep.to]
				break
			}
		}
		existing := have[name]
		for n := 1; n <= want; n++ {
			op := Op{Service: name, Number: n, Hash: hash, Shared: sharedHere}
			inst, ok := findNumber(existing, n)
			changed := fields.Changed(inst.Fields)
			if inst.Fields == nil && inst.Hash != hash {
				changed = []string{"config hash"}
			}
			switch {
			case !ok && n == 1:
				op.Kind, op.Reason = Create, "new service"
			case !ok:
				op.Kind, op.Reason = Create, fmt.Sprintf("new replica (scale %d)", want)
			case opts.ForceRecreate && (len(opts.Services) == 0 || opts.AlwaysRecreateDeps || slices.Contains(opts.Services, name)):
				op.Kind, op.Reason = Recreate, "--force-recreate"
			case inst.Hash != hash && !opts.NoRecreate:
				op.Kind, op.Reason, op.Changed = Recreate, changedReason(changed, fields), changed
			case inst.State != Running:
				op.Kind, op.Reason = Start, "stopped"
			case restartFor != "":
				op.Kind, op.Reason = Restart, fmt.Sprintf("dependency %s is replaced (depends_on.%s.restart: true)", restartFor, restartFor)
			case inst.Hash != hash:
				op.Kind, op.Reason = Nothing, "config changed, kept by --no-recreate"
			default:
				op.Kind, op.Reason = Nothing, "up to date"
			}
			if op.Kind == Recreate || op.Kind == Restart {
				bounced[name] = true
			}
			b.add(op)
		}
		for _, inst := range existing {
			if inst.Number > want {
				b.add(Op{Kind: Remove, Service: name, Number: inst.Number, Reason: fmt.Sprintf("scale-down to %d", want)})
			}
		}
	}
	b.orphans(p, have, opts.RemoveOrphans)
	b.plan.Shares = shares
	return b.finish(g, g.dependencies), nil
}

// selectServices returns the services to plan, with depends_on reduced to
// the selected set. Explicitly named services are enabled even when their
// profile is not active, as docker compose does; their dependencies are
// not, so a required dependency that no active profile enables is a
// *DisabledDependencyError.
func selectServices(p *types.Project, targets []string, noDeps bool) (types.Services, error) {
	available := maps.Clone(p.Services)
	if available == nil {
		available = types.Services{}
	}
	active := slices.Clone(p.Profiles)
	for _, t := range targets {
		if svc, ok := p.DisabledServices[t]; ok {
			active = append(active, svc.Profiles...)
		}
	}
	if len(active) > len(p.Profiles) {
		for name, svc := range p.DisabledServices {
			if svc.HasProfile(active) {
				available[name] = svc
			}
		}
	}
	for _, t := range targets {
		if _, ok := available[t]; !ok {
			return nil, fmt.Errorf("no such service: %s (the project has: %s)", t, strings.Join(slices.Sorted(maps.Keys(available)), ", "))
		}
	}

	chosen := map[string]bool{}
	queue := slices.Clone(targets)
	if len(targets) == 0 {
		queue = slices.Sorted(maps.Keys(available))
	}
	for _, t := range queue {
		chosen[t] = true
	}
	for head := 0; head < len(queue); head++ {
		name := queue[head]
		for _, dep := range slices.Sorted(maps.Keys(available[name].DependsOn)) {
			cfg := available[name].DependsOn[dep]
			if _, ok := available[dep]; !ok {
				if !cfg.Required {
					continue
				}
				if svc, ok := p.DisabledServices[dep]; ok {
					return nil, &DisabledDependencyError{Service: name, Dependency: dep, Profiles: slices.Clone(svc.Profiles)}
				}
				return nil, fmt.Errorf("service %q depends on undefined service %q: define it, or set depends_on.%s.required: false", name, dep, dep)
			}
			if !noDeps && !chosen[dep] {
				chosen[dep] = true
				queue = append(queue, dep)
			}
		}
	}

	out := make(types.Services, len(chosen))
	for name := range chosen {
		svc := available[name]
		deps := make(types.DependsOnConfig, len(svc.DependsOn))
		for dep, cfg := range svc.DependsOn {
			if chosen[dep] {
				deps[dep] = cfg
			}
		}
		svc.DependsOn = deps
		out[name] = svc
	}
	return out, nil
}

// DisabledDependencyError says that a service requires another one that no
// active profile enables.
type DisabledDependencyError struct {
	Service, Dependency string
	Profiles            []string
}

func (e *DisabledDependencyError) Error() string {
	flags := make([]string, len(e.Profiles))
	for i, p := range e.Profiles {
		flags[i] = "--profile " + p
	}
	return fmt.Sprintf("service %q depends on %q, which no active profile enables: run with %s (or set depends_on.%s.required: false)",
		e.Service, e.Dependency, strings.Join(flags, " or "), e.Dependency)
}

// runningOthers counts the running VMs of the services not planned.
func runningOthers(have map[string][]Instance, planned types.Services) map[string]int {
	out := map[string]int{}
	for name, is := range have {
		if _, ok := planned[name]; ok {
			continue
		}
		for _, in := range is {
			if in.State == Running {
				out[name]++
			}
		}
	}
	return out
}

// MaxReplicas bounds the replicas of one service: each one is a VM.
const MaxReplicas = 1000

// replicas is the number of instances a service wants: --scale, then
// scale:, then deploy.replicas, then 1.
func replicas(svc types.ServiceConfig, scale map[string]int) (int, error) {
	n := 1
	switch s, ok := scale[svc.Name]; {
	case ok:
		n = s
	case svc.Scale != nil:
		n = *svc.Scale
	case svc.Deploy != nil && svc.Deploy.Replicas != nil:
		n = *svc.Deploy.Replicas
	}
	if n < 0 || n > MaxReplicas {
		return 0, fmt.Errorf("service %q: replicas: %d is out of range: use 0 to %d", svc.Name, n, MaxReplicas)
	}
	return n, nil
}

func byService(o Observed) map[string][]Instance {
	m := map[string][]Instance{}
	for _, inst := range o.Instances {
		m[inst.Service] = append(m[inst.Service], inst)
	}
	for _, is := range m {
		slices.SortFunc(is, func(a, b Instance) int { return cmp.Compare(a.Number, b.Number) })
	}
	return m
}

func findNumber(is []Instance, n int) (Instance, bool) {
	for _, inst := range is {
		if inst.Number == n {
			return inst, true
		}
	}
	return Instance{}, false
}

func (g *Graph) dependencies(i int) []int {
	out := make([]int, len(g.deps[i]))
	for k, e := range g.deps[i] {
		out[k] = e.to
	}
	return out
}

func (g *Graph) dependents(i int) []int { return g.users[i] }

// topological returns the services in wave order, name order within a wave.
func (g *Graph) topological() []string {
	order := slices.Clone(g.names)
	slices.SortStableFunc(order, func(a, b string) int {
		return cmp.Compare(g.wave[g.index[a]], g.wave[g.index[b]])
	})
	return order
}
