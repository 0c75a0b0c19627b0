package devloop

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/supervisor"
	"github.com/vmcompose/vmcompose/watch"
)

// Options say where the services are and how to reach them.
type Options struct {
	// Dir is the project's state directory (its supervisor's).
	Dir string
	// Running is the replica numbers of a service that run now; a service
	// with none is skipped (the user stopped it: watching never starts it).
	Running func(ctx context.Context, service string) ([]int, error)
	// Exec runs a sync+exec rule's command in one replica and returns its
	// exit code, as `vmcompose exec` does.
	Exec func(ctx context.Context, service string, index int, spec *agent.ExecSpec) (int, error)
	// Rebuild pulls a service's image again and recreates its VMs; note
	// is for the user (what it freed).
	Rebuild func(ctx context.Context, service string) (note string, err error)
}

// Loop applies the batches of a project's watch rules.
type Loop struct {
	opts     Options
	rules    []watch.Rule
	triggers map[ruleKey]types.Trigger
	fileRule map[ruleKey]bool
	// dependants are, by service, the services to restart after its
	// process restarted (depends_on with restart: true, transitively).
	dependants map[string][]string

	// mu keeps a boot's resync and a batch out of each other's way: a
	// batch that came while a replica was resynced is applied after it.
	mu sync.Mutex
	// fresh are the replicas resynced whole since they booted, which an
	// initial_sync can skip.
	fresh map[replicaKey]bool
}

type replicaKey struct {
	service string
	index   int
}

type ruleKey struct {
	service string
	index   int
}

// New prepares a Loop for rules, whose services are in services. A rule
// whose path is a file now syncs a file from then on: a batch deleting it
// cannot tell.
func New(services types.Services, rules []watch.Rule, opts Options) *Loop {
	l := &Loop{opts: opts, rules: rules, triggers: map[ruleKey]types.Trigger{}, fileRule: map[ruleKey]bool{},
		fresh: map[replicaKey]bool{}, dependants: restartDependants(services)}
	for _, r := range rules {
		k := ruleKey{r.Service, r.Index}
		l.triggers[k] = services[r.Service].Develop.Watch[r.Index]
		if fi, err := os.Stat(r.Path); err == nil && !fi.IsDir() {
			l.fileRule[k] = true
		}
	}
	return l
}

// Rules are the rules the loop applies batches of.
func (l *Loop) Rules() []watch.Rule { return l.rules }

// Event is what one batch did.
type Event struct {
	Service string `json:"service"`
	Action  string `json:"action"`
	// Initial is an initial_sync's batch.
	Initial bool `json:"initial,omitempty"`
	// Booted is, for a resync (action "resync"), why replica Replica
	// booted: "created", "started" or "restarted".
	Booted  string `json:"booted,omitempty"`
	Replica int    `json:"replica,omitempty"`
	Entries int    `json:"entries"`
	Target  string `json:"target,omitempty"`
	// Replicas is how many running replicas it went to; 0 skipped it.
	Replicas int   `json:"replicas"`
	Millis   int64 `json:"ms"`
	// Dependants are the services restarted after it, as their
	// depends_on asks (restart: true).
	Dependants []string `json:"dependants,omitempty"`
	// Note is what else the action did, for the user.
	Note string `json:"note,omitempty"`
	// Skipped are entries a guest (or the host) did not apply, with why.
	Skipped []agent.SyncSkip `json:"skipped,omitempty"`
	Error   string           `json:"error,omitempty"`
}

func (e Event) String() string {
	var b strings.Builder
	if e.Action == ActionResync {
		return e.resyncString()
	}
	fmt.Fprintf(&b, "%s: %s", e.Service, e.Action)
	if e.Initial {
		b.WriteString(" (initial sync)")
	}
	if e.Target != "" {
		fmt.Fprintf(&b, " %d %s to %s", e.Entries, plural(e.Entries, "file"), e.Target)
	}
	switch {
	case e.Error != "":
		fmt.Fprintf(&b, ": %s", e.Error)
	case e.Replicas == 0:
		b.WriteString(": skipped, the service is not running")
	default:
		fmt.Fprintf(&b, " in %dms", e.Millis)
		if e.Replicas > 1 {
			fmt.Fprintf(&b, " (%d replicas)", e.Replicas)
		}
	}
	if e.Note != "" {
		fmt.Fprintf(&b, "; %s", e.Note)
	}
	if len(e.Dependants) > 0 {
		fmt.Fprintf(&b, "; restarted %s (depends_on %s with restart: true)", strings.Join(e.Dependants, ", "), e.Service)
	}
	for i, s := range e.Skipped {
		if i == 3 {
			fmt.Fprintf(&b, "; %d more not applied", len(e.Skipped)-3)
			break
		}
		fmt.Fprintf(&b, "; %s not applied: %s", s.Path, s.Reason)
	}
	return b.String()
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// Apply gives a batch to every running replica of its rule's service and
// runs the rule's action after it.
func (l *Loop) Apply(ctx context.Context, b watch.Batch) Event {
	ev := l.event(b.Rule, b.Entries, string(b.Rule.Action), false)
	replicas, err := l.opts.Running(ctx, b.Rule.Service)
	if err != nil {
		ev.Error = err.Error()
		return ev
	}
	return l.apply(ctx, ev, b.Rule, b.Entries, replicas)
}

// InitialSync syncs the rule's path as it is now when the rule asks for
// it (initial_sync: true and a target) into the running replicas that
// were not resynced whole as they booted; ok is false when it has none to
// sync. Like docker compose, it only syncs: the action runs on changes.
func (l *Loop) InitialSync(ctx context.Context, r watch.Rule) (ev Event, ok bool) {
	t := l.triggers[ruleKey{r.Service, r.Index}]
	if !t.InitialSync || r.Target == "" {
		return Event{}, false
	}
	action := string(types.WatchActionSync)
	replicas, err := l.opts.Running(ctx, r.Service)
	if err != nil {
		ev = l.event(r, nil, action, true)
		ev.Error = err.Error()
		return ev, true
	}
	l.mu.Lock()
	stale := slices.DeleteFunc(slices.Clone(replicas), l.isFresh(r.Service))
	l.mu.Unlock()
	if len(replicas) > 0 && len(stale) == 0 {
		return Event{}, false // each was resynced whole as it booted
	}
	entries, err := listAll(r)
	ev = l.event(r, entries, action, true)
	if err != nil {
		ev.Error = err.Error()
		return ev, true
	}
	return l.apply(ctx, ev, r, entries, stale), true
}

// listAll is every entry of the rule's path as it is now (watch.List).
func listAll(r watch.Rule) ([]watch.Entry, error) {
	var entries []watch.Entry
	err := watch.List(r, func(e watch.Entry) error { entries = append(entries, e); return nil })
	return entries, err
}

// event is the start of a batch's Event.
func (l *Loop) event(r watch.Rule, entries []watch.Entry, action string, initial bool) Event {
	ev := Event{Service: r.Service, Action: action, Initial: initial, Entries: len(entries)}
	if hasSync(action) {
		ev.Target = r.Target
	}
	return ev
}

// apply gives entries to replicas and runs ev's action after them (a
// rebuild instead recreates the service).
func (l *Loop) apply(ctx context.Context, ev Event, r watch.Rule, entries []watch.Entry, replicas []int) Event {
	start := time.Now()
	action := ev.Action
	ev.Replicas = len(replicas)
	if action == string(types.WatchActionRebuild) && len(replicas) > 0 {
		if l.opts.Rebuild == nil {
			ev.Error = "action: rebuild is not supported here"
		} else if note, err := l.opts.Rebuild(ctx, r.Service); err != nil {
			ev.Error = err.Error()
		} else {
			ev.Note = note
		}
		replicas = nil // recreated: the service's own VMs
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	// A replica that fails does not keep the batch from the others.
	var failed []string
	for _, n := range replicas {
		if err := l.applyIn(ctx, r, n, entries, action, &ev); err != nil {
			msg := err.Error()
			if name := fmt.Sprintf("%s-%d", r.Service, n); !strings.Contains(msg, name) {
				msg = name + ": " + msg
			}
			failed = append(failed, msg)
		}
	}
	if restarts(action) && len(replicas) > 0 {
		failed = append(failed, l.restartDependants(ctx, r.Service, &ev)...)
	}
	if len(failed) > 0 {
		ev.Error = strings.Join(failed, "; ")
	}
	ev.Millis = time.Since(start).Milliseconds()
	return ev
}

// applyIn is one replica's part of a batch.
func (l *Loop) applyIn(ctx context.Context, r watch.Rule, n int, entries []watch.Entry, action string, ev *Event) error {
	if hasSync(action) {
		if err := l.syncTo(ctx, r, n, entries, ev); err != nil {
			return err
		}
	}
	switch types.WatchAction(action) {
	case types.WatchActionSync:
		return nil
	case types.WatchActionRestart, types.WatchActionSyncRestart:
		_, err := supervisor.RestartProcess(ctx, l.opts.Dir, &supervisor.Request{Services: []string{r.Service}, Index: n})
		return err
	case types.WatchActionSyncExec:
		return l.exec(ctx, r, n)
	}
	return fmt.Errorf("action %q is not supported", action)
}

// syncTo sends a rule's entries to replica n, adding what the guest (or
// the host) skipped to ev.
func (l *Loop) syncTo(ctx context.Context, r watch.Rule, n int, entries []watch.Entry, ev *Event) error {
	target, sync := syncEntries(r.Target, l.fileRule[ruleKey{r.Service, r.Index}], entries)
	req := &supervisor.Request{Services: []string{r.Service}, Index: n, Sync: &agent.SyncSpec{Target: target}}
	res, err := supervisor.Sync(ctx, l.opts.Dir, req, sync)
	if err != nil {
		return err
	}
	ev.Skipped = append(ev.Skipped, res.Skipped...)
	return nil
}

// exec runs a sync+exec rule's command in replica n.
func (l *Loop) exec(ctx context.Context, r watch.Rule, n int) error {
	h := l.triggers[ruleKey{r.Service, r.Index}].Exec
	spec := &agent.ExecSpec{Argv: h.Command, User: h.User, WorkingDir: h.WorkingDir}
	for k, v := range h.Environment {
		if v != nil {
			spec.Env = append(spec.Env, k+"="+*v)
		}
	}
	sort.Strings(spec.Env)
	if l.opts.Exec == nil {
		return fmt.Errorf("action: sync+exec is not supported here")
	}
	code, err := l.opts.Exec(ctx, r.Service, n, spec)
	if err == nil && code != 0 {
		err = fmt.Errorf("exec %s: exit code %d", strings.Join(h.Command, " "), code)
	}
	return err
}

// restarts says whether an action restarts the service's process.
func restarts(action string) bool {
	switch types.WatchAction(action) {
	case types.WatchActionRestart, types.WatchActionSyncRestart:
		return true
	}
	return false
}

// hasSync says whether an action syncs the batch's files.
func hasSync(action string) bool {
	switch types.WatchAction(action) {
	case types.WatchActionSync, types.WatchActionSyncRestart, types.WatchActionSyncExec:
		return true
	}
	return false
}
