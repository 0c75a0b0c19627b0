package watch

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"path/filepath"
	"slices"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Files follows a fixed set of files, such as a project's compose and env
// files, by watching their directories and keeping the events of those
// names: an editor saves by renaming a new file over the old one, whose
// watch would then follow nothing, and a file may not exist yet (a .env
// created later). Their changes are gathered like a rule's batch, so one
// save is one call of Run's emit.
type Files struct {
	names map[string]bool
	opts  Options
	fsw   *fsnotify.Watcher
	g     gather
}

// NewFiles watches the directories of paths, which must be absolute. A
// directory that cannot be watched is said through opts.Warn, and its
// files are not followed.
func NewFiles(paths []string, opts Options) (*Files, error) {
	opts = opts.withDefaults()
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, instancesError(err)
	}
	f := &Files{names: map[string]bool{}, opts: opts, fsw: fsw}
	watched := map[string]bool{}
	for _, p := range paths {
		p = filepath.Clean(p)
		f.names[p] = true
		dir := filepath.Dir(p)
		if watched[dir] {
			continue
		}
		watched[dir] = true
		if err := fsw.Add(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			opts.Warn(fmt.Errorf("watching %s: %w", dir, err))
		}
	}
	return f, nil
}

// Run calls emit, from this goroutine, with the sorted names of the files
// that changed (written, created, removed or renamed over) once they have
// been quiet for opts.Timing, until ctx is done; it then stops watching.
func (f *Files) Run(ctx context.Context, emit func(changed []string)) error {
	defer f.fsw.Close()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		if at, ok := f.g.due(f.opts.Timing); ok {
			timer.Reset(time.Until(at))
		}
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-f.fsw.Events:
			if !ok {
				return nil
			}
			if name := filepath.Clean(ev.Name); f.names[name] && !ev.Has(fsnotify.Chmod) {
				f.g.add(name, false, false, f.opts.Now())
			}
		case err, ok := <-f.fsw.Errors:
			if !ok {
				return nil
			}
			f.opts.Warn(fmt.Errorf("watching: %w", err))
		case <-timer.C:
			if at, ok := f.g.due(f.opts.Timing); ok && !at.After(f.opts.Now()) {
				emit(slices.Sorted(maps.Keys(f.g.take())))
			}
		}
	}
}
