package watch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vmcompose/vmcompose/internal/hostfile"
)

// Op is what to do at an Entry's path in the guest.
type Op uint8

const (
	// Write puts a file or a symlink at the path, replacing what is there
	// and creating missing parent directories (include: may sync a file
	// without its directory).
	Write Op = iota + 1
	// Mkdir makes the path a directory with the entry's mode (and its
	// parents), keeping what it holds.
	Mkdir
	// Delete removes the path, and all under it when it is a directory;
	// nothing there is no error.
	Delete
)

func (o Op) String() string {
	switch o {
	case Write:
		return "write"
	case Mkdir:
		return "mkdir"
	case Delete:
		return "delete"
	}
	return "op?"
}

// Entry is the final state of one path of a rule.
type Entry struct {
	// Path is slash-separated and relative to the rule's path; "." is the
	// path itself (the file of a single-file rule).
	Path string
	Op   Op
	// Mode is the file's type and permission bits: fs.ModeSymlink for a
	// link, 0 type bits for a regular file, fs.ModeDir for Mkdir.
	Mode fs.FileMode
	Link string // a symlink's target, as the link holds it
	// Size is a regular file's size when it was seen. Its content stays
	// on the host until Open reads it, as the batch is sent: listing or
	// batching a tree costs no memory for what it holds.
	Size int64
	// Data is the content of an Entry made by hand (no host file).
	Data []byte
	abs  string
}

// Open reads a regular file's content, from the host file as exactly
// Size bytes (cut, or padded with zeros, if it changed since it was seen:
// a change is an event, whose batch brings the file again), or Data.
func (e Entry) Open() (io.ReadCloser, error) {
	if e.abs == "" {
		return io.NopCloser(bytes.NewReader(e.Data)), nil
	}
	return hostfile.Open(e.abs, e.Size)
}

// Batch is the changes of one rule that came together: deletes first,
// then the rest in path order, so a directory comes before what is in it.
type Batch struct {
	Rule    Rule
	Entries []Entry
}

// Timing is how changes are gathered into batches. DefaultTiming
// explains the values.
type Timing struct {
	// Quiet is how long a rule must see no event before its batch goes.
	Quiet time.Duration
	// BurstQuiet replaces Quiet once a batch has Burst events: a checkout
	// is under way, and its writer may stall on a busy host; being one
	// batch matters more then than a few more milliseconds.
	BurstQuiet time.Duration
	Burst      int
	// Cap is how long a batch may wait after its first event, however
	// busy the path stays.
	Cap time.Duration
}

// DefaultTiming: inotify reports a change within a millisecond of it, and
// an editor's save (write a temporary file, fsync, rename) is a burst a
// few milliseconds long, so 25 ms of quiet ends the batch after the burst
// and leaves most of the 100 ms an edit may take to reach the guest to
// the rest of the way (BenchmarkEventToBatch: 26 ms from write to batch).
// A checkout writes file after file, but on a loaded 2-core host its
// writer stalls for 25 ms now and then (TestBurst split one of 1 000 files
// at 924 that way), so after 100 events the quiet period is 100 ms. The
// cap bounds the wait while something keeps writing (a build writing into
// the tree), but must outlast a checkout: one batch means one restart or
// exec after it, not one per part. 1 000 files take 0.2-0.3 s to create
// on that host, 0.35-0.75 s while the watcher shares it (TestBurst), hence
// 1 s rather than the 200 ms an editor alone would need.
var DefaultTiming = Timing{Quiet: 25 * time.Millisecond, BurstQuiet: 100 * time.Millisecond, Burst: 100, Cap: time.Second}

// pending is what a rule's events say of one path until its batch goes.
type pending struct {
	// created: the first event was the path's creation, so the guest
	// never had it; gone by the flush, it is dropped, not deleted.
	created bool
	// removed: the path was removed or renamed away at some point, so
	// what the guest has there must go before its new state comes.
	removed bool
}

// gather holds one rule's pending paths and the times that decide when
// they go (the debouncer: pure, the caller passes the time).
type gather struct {
	paths       map[string]*pending
	events      int
	first, last time.Time
}

func (g *gather) add(rel string, created, removed bool, now time.Time) {
	if g.paths == nil {
		g.paths = map[string]*pending{}
	}
	p, ok := g.paths[rel]
	if !ok {
		p = &pending{created: created}
		g.paths[rel] = p
	}
	p.removed = p.removed || removed
	if g.first.IsZero() {
		g.first = now
	}
	g.last = now
	g.events++
}

// due is when the batch goes: after Quiet without events, or Cap after
// its first event; ok is false when nothing is pending.
func (g *gather) due(t Timing) (at time.Time, ok bool) {
	if len(g.paths) == 0 {
		return time.Time{}, false
	}
	quiet := t.Quiet
	if t.Burst > 0 && g.events >= t.Burst {
		quiet = t.BurstQuiet
	}
	return minTime(g.last.Add(quiet), g.first.Add(t.Cap)), true
}

// take hands the pending paths over and starts afresh.
func (g *gather) take() map[string]*pending {
	p := g.paths
	*g = gather{}
	return p
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// settle turns a rule's pending paths into the batch's entries, reading
// each path's state now: the last state wins, whatever the events were.
// What cannot be read is left as the guest has it, and said in unread.
func settle(root string, fileRule bool, paths map[string]*pending) (entries []Entry, unread []error) {
	var deletes, rest []Entry
	for _, rel := range slices.Sorted(maps.Keys(paths)) {
		p := paths[rel]
		abs := root
		if !fileRule {
			abs = filepath.Join(root, filepath.FromSlash(rel))
		}
		e, err := read(abs, rel)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if !p.created {
				deletes = append(deletes, Entry{Path: rel, Op: Delete})
			}
			continue
		case errors.Is(err, hostfile.ErrSpecial): // a socket, a pipe: nothing a guest could hold
			continue
		case err != nil:
			unread = append(unread, fmt.Errorf("reading %s: %w: the guest keeps what it has there", abs, err))
			continue
		}
		if p.removed && e.Op == Mkdir {
			deletes = append(deletes, Entry{Path: rel, Op: Delete})
		}
		rest = append(rest, e)
	}
	return append(topDeletes(deletes), rest...), unread
}

// topDeletes drops the deletes inside a deleted directory: the directory
// goes with all it holds. deletes is sorted by path.
func topDeletes(deletes []Entry) []Entry {
	var out []Entry
	for _, d := range deletes {
		if n := len(out); n > 0 && (out[n-1].Path == "." || strings.HasPrefix(d.Path, out[n-1].Path+"/")) {
			continue
		}
		out = append(out, d)
	}
	return out
}

// read is the entry that gives the guest abs as it is now, never
// following a symlink out of the watched tree.
func read(abs, rel string) (Entry, error) {
	fi, err := os.Lstat(abs)
	if err != nil {
		return Entry{}, err
	}
	m := fi.Mode()
	switch {
	case m.IsDir():
		return Entry{Path: rel, Op: Mkdir, Mode: fs.ModeDir | m.Perm()}, nil
	case m&fs.ModeSymlink != 0:
		link, err := os.Readlink(abs)
		return Entry{Path: rel, Op: Write, Mode: fs.ModeSymlink | m.Perm(), Link: link}, err
	case m.IsRegular():
		return Entry{Path: rel, Op: Write, Mode: m & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky), Size: fi.Size(), abs: abs}, nil
	}
	return Entry{}, hostfile.ErrSpecial
}
