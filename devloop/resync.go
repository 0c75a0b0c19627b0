package devloop

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/vmcompose/vmcompose/supervisor"
	"github.com/vmcompose/vmcompose/watch"
)

// ActionResync is the Event of a replica that booted while watched: every
// sync rule's path synced whole into it before its process started.
const ActionResync = "resync"

// reattachDelay is the pause before attaching to the supervisor again
// after it went away (replaced, or exited with nothing to run).
const reattachDelay = 250 * time.Millisecond

// Follow keeps the replicas of services that boot while watching (a
// recreate, a start after a stop, a restart policy's reboot) from running
// stale files: attached to the project's supervisor as a watch session,
// it syncs every sync rule's path whole into each such replica before its
// process starts, then launches it, and hands out an Event for each.
// ready is called once the first attachment holds (boots from then on are
// resynced). It returns when ctx ends.
func (l *Loop) Follow(ctx context.Context, services []string, ready func(), out func(Event)) {
	for ctx.Err() == nil {
		supervisor.Watch(ctx, l.opts.Dir, services, ready, func(h supervisor.Held) { l.Resync(ctx, h, out) })
		ready = func() {}
		select {
		case <-ctx.Done():
		case <-time.After(reattachDelay):
		}
	}
}

// Resync syncs the paths of the service's sync rules into the replica
// that h says waits for them, hands out its Event, and then launches its
// process, even when a sync failed (a stale file beats a service that
// never starts); a launch that fails is a second Event. The Event comes
// before the replica runs, so before an up that waits for it returns.
func (l *Loop) Resync(ctx context.Context, h supervisor.Held, out func(Event)) {
	start := time.Now()
	ev := Event{Service: h.Service, Action: ActionResync, Booted: h.Reason, Replica: h.Index, Replicas: 1}
	l.mu.Lock()
	defer l.mu.Unlock()
	var failed []string
	for _, r := range l.rules {
		if r.Service != h.Service || r.Target == "" || !hasSync(string(r.Action)) {
			continue
		}
		if err := l.resyncRule(ctx, r, h.Index, &ev); err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", r, err))
		}
	}
	ev.Error = strings.Join(failed, "; ")
	ev.Millis = time.Since(start).Milliseconds()
	out(ev)
	if err := supervisor.Launch(ctx, l.opts.Dir, &supervisor.Request{Services: []string{h.Service}, Index: h.Index}); err != nil {
		out(Event{Service: h.Service, Action: ActionResync, Booted: h.Reason, Replica: h.Index, Replicas: 1,
			Error: "starting its process after the sync: " + err.Error()})
		return
	}
	if len(failed) == 0 {
		l.fresh[replicaKey{h.Service, h.Index}] = true
	}
}

// resyncRule syncs one rule's path whole into replica n.
func (l *Loop) resyncRule(ctx context.Context, r watch.Rule, n int, ev *Event) error {
	entries, err := listAll(r)
	if err != nil {
		return err
	}
	if err := l.syncTo(ctx, r, n, entries, ev); err != nil {
		return err
	}
	ev.Entries += len(entries)
	return nil
}

// isFresh says whether a replica of service was resynced since it
// booted. The caller holds l.mu.
func (l *Loop) isFresh(service string) func(int) bool {
	return func(n int) bool { return l.fresh[replicaKey{service, n}] }
}

// resyncString is a resync's line: `app-2: restarted: 12 files synced
// before its process started in 40ms`.
func (e Event) resyncString() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s-%d: %s: %d %s synced before its process started", e.Service, e.Replica, e.Booted, e.Entries, plural(e.Entries, "file"))
	if e.Error != "" {
		fmt.Fprintf(&b, ", with errors: %s", e.Error)
	} else {
		fmt.Fprintf(&b, " in %dms", e.Millis)
	}
	if n := len(e.Skipped); n > 0 {
		fmt.Fprintf(&b, "; %d not applied (%s: %s)", n, e.Skipped[0].Path, e.Skipped[0].Reason)
	}
	return b.String()
}
