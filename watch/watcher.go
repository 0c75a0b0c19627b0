package watch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Options tune a Watcher; the zero value is the default.
type Options struct {
	Timing Timing // zero: DefaultTiming
	// Now stamps events; tests give a clock of their own. Nil: time.Now.
	Now func() time.Time
	// Warn receives what does not stop watching: a directory that could
	// not be watched (inotify limits), lost events. Nil: dropped.
	Warn func(error)

	addWatch func(fsw *fsnotify.Watcher, dir string) error // tests fail some
}

func (o Options) withDefaults() Options {
	if o.Timing == (Timing{}) {
		o.Timing = DefaultTiming
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Warn == nil {
		o.Warn = func(error) {}
	}
	return o
}

// Watcher follows the paths of a set of rules; Run hands over their
// batches.
type Watcher struct {
	rules   []Rule
	filters []*filter
	gathers []gather
	opts    Options
	fsw     *fsnotify.Watcher
	dirs    map[string]bool // the directories inotify watches
	add     func(string) error
	full    bool // the last watch failed for lack of watches: warned once
}

// New watches the paths of rules, every directory under them (a
// single-file rule watches its directory for that file: editors replace
// files by renaming). Changes made from now on are in Run's batches.
func New(rules []Rule, opts Options) (*Watcher, error) {
	opts = opts.withDefaults()
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, instancesError(err)
	}
	w := &Watcher{rules: rules, gathers: make([]gather, len(rules)), opts: opts, fsw: fsw, dirs: map[string]bool{}, add: fsw.Add}
	if opts.addWatch != nil {
		w.add = func(dir string) error { return opts.addWatch(fsw, dir) }
	}
	for _, r := range rules {
		f, err := newFilter(r)
		if err != nil {
			fsw.Close()
			return nil, err
		}
		w.filters = append(w.filters, f)
	}
	for i, r := range rules {
		if _, err := os.Lstat(r.Path); err != nil {
			opts.Warn(fmt.Errorf("%s: %w", r, err))
			continue
		}
		if w.filters[i].fileRule {
			w.watchDir(filepath.Dir(r.Path))
			continue
		}
		w.watchTree(r.Path, nil)
	}
	return w, nil
}

// Close ends the watches of a Watcher that will not Run (Run ends them
// itself as it returns).
func (w *Watcher) Close() error { return w.fsw.Close() }

// Run hands each batch to emit, from this goroutine, until ctx is done;
// it then stops watching. While emit runs, events wait in the kernel's
// queue (fs.inotify.max_queued_events).
func (w *Watcher) Run(ctx context.Context, emit func(Batch)) error {
	defer w.fsw.Close()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		if at, ok := w.due(); ok {
			timer.Reset(time.Until(at))
		}
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-w.fsw.Events:
			if !ok {
				return nil
			}
			w.handle(ev)
		case err, ok := <-w.fsw.Errors:
			if !ok {
				return nil
			}
			w.fsError(err)
		case <-timer.C:
			w.drain()
			w.flush(emit)
		}
	}
}

// due is when the first pending batch goes.
func (w *Watcher) due() (time.Time, bool) {
	var first time.Time
	for i := range w.gathers {
		if at, ok := w.gathers[i].due(w.opts.Timing); ok && (first.IsZero() || at.Before(first)) {
			first = at
		}
	}
	return first, !first.IsZero()
}

// drain takes the events already there, so a batch never goes with part
// of a burst that was read but not handled yet.
func (w *Watcher) drain() {
	for {
		select {
		case ev := <-w.fsw.Events:
			w.handle(ev)
		default:
			return
		}
	}
}

func (w *Watcher) flush(emit func(Batch)) {
	now := w.opts.Now()
	for i := range w.gathers {
		if at, ok := w.gathers[i].due(w.opts.Timing); !ok || at.After(now) {
			continue
		}
		entries, unread := settle(w.rules[i].Path, w.filters[i].fileRule, w.gathers[i].take())
		for _, err := range unread {
			w.opts.Warn(fmt.Errorf("%s: %w", w.rules[i], err))
		}
		if len(entries) > 0 {
			emit(Batch{Rule: w.rules[i], Entries: entries})
		}
	}
}

// handle records one event for the rules it concerns; a new directory is
// watched, and all it already holds is recorded too (mkdir -p a/b &&
// touch a/b/c happens before a's watch exists).
func (w *Watcher) handle(ev fsnotify.Event) {
	abs, now := filepath.Clean(ev.Name), w.opts.Now()
	created := ev.Has(fsnotify.Create)
	removed := ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename)
	if removed {
		w.unwatch(abs)
	}
	w.record(abs, created, removed, now)
	if created {
		if fi, err := os.Lstat(abs); err == nil && fi.IsDir() {
			w.watchTree(abs, func(p string) { w.record(p, true, false, now) })
		}
	}
}

func (w *Watcher) record(abs string, created, removed bool, now time.Time) {
	for i, f := range w.filters {
		if rel, ok := f.wants(abs); ok {
			w.gathers[i].add(rel, created, removed, now)
		}
	}
}

// watchTree watches dir and the directories under it that some rule
// looks into, calling found (when not nil) for everything under dir.
func (w *Watcher) watchTree(dir string, found func(string)) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil { // vanished meanwhile: its removal is an event of its own
			return nil
		}
		if p != dir && found != nil {
			found(p)
		}
		if !d.IsDir() {
			return nil
		}
		if !w.looksInto(p) {
			return filepath.SkipDir
		}
		w.watchDir(p)
		return nil
	})
}

// looksInto is whether some rule syncs dir or may sync something in it.
func (w *Watcher) looksInto(dir string) bool {
	for _, f := range w.filters {
		if _, ok := f.rel(dir); ok && !f.fileRule && (!f.skipped(dir) || f.descend(dir)) {
			return true
		}
	}
	return false
}

func (w *Watcher) watchDir(dir string) {
	if w.dirs[dir] {
		return
	}
	err := w.add(dir)
	switch {
	case err == nil:
		w.dirs[dir] = true
		w.full = false
	case errors.Is(err, fs.ErrNotExist):
	case errors.Is(err, syscall.ENOSPC):
		if !w.full {
			w.opts.Warn(watchesError(dir))
		}
		w.full = true
	default:
		w.opts.Warn(fmt.Errorf("watching %s: %w", dir, err))
	}
}

// unwatch forgets a directory that was removed or renamed, and the ones
// under it: their watches would report a moved tree under its old name.
func (w *Watcher) unwatch(abs string) {
	if !w.dirs[abs] {
		return
	}
	for d := range w.dirs {
		if d == abs || strings.HasPrefix(d, abs+"/") {
			_ = w.fsw.Remove(d) // gone with its directory already, most often
			delete(w.dirs, d)
		}
	}
}

// fsError handles what fsnotify reports besides events: an overflowed
// kernel queue lost events, so every rule is read again whole (what was
// deleted meanwhile is not seen).
func (w *Watcher) fsError(err error) {
	if !errors.Is(err, fsnotify.ErrEventOverflow) {
		w.opts.Warn(fmt.Errorf("watching: %w", err))
		return
	}
	w.opts.Warn(fmt.Errorf("watching: the kernel dropped events (more than fs.inotify.max_queued_events came at once): syncing every watched path again; files deleted meanwhile stay in the guest until they change, raise it with `sysctl fs.inotify.max_queued_events=N`"))
	now := w.opts.Now()
	for i, r := range w.rules {
		_ = List(r, func(e Entry) error {
			w.gathers[i].add(e.Path, true, false, now)
			return nil
		})
	}
}
