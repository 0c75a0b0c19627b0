package build

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/internal/atomicfile"
	"github.com/vmcompose/vmcompose/internal/hostfile"
)

// Changes are the sync entries that turn a guest directory holding prev
// into m, with the files' content read from contextDir as they are sent:
// first the deletions of what is gone or changed type (a directory once,
// not what it held), then what is new or differs, a directory before
// what it holds. A file is sent again when its size or modification time
// differs, and only chmod-ed when just its mode does. A nil prev is an
// empty guest directory.
func (m Manifest) Changes(prev Manifest, contextDir string) []agent.SyncEntry {
	cur, old := m.byPath(), prev.byPath()
	var out []agent.SyncEntry
	gone := map[string]bool{}
	for _, o := range prev {
		if n, ok := cur[o.Path]; ok && n.Mode.Type() == o.Mode.Type() {
			continue
		}
		gone[o.Path] = true
		if !inGone(gone, o.Path) {
			out = append(out, agent.SyncEntry{Op: agent.SyncDelete, Path: o.Path})
		}
	}
	for _, e := range m {
		o, had := old[e.Path]
		if had && o.Mode.Type() != e.Mode.Type() {
			had = false // deleted above
		}
		if se, ok := change(e, o, had, contextDir); ok {
			out = append(out, se)
		}
	}
	return out
}

// inGone is whether a directory holding p is deleted: p goes with it.
func inGone(gone map[string]bool, p string) bool {
	for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
		if gone[dir] {
			return true
		}
	}
	return false
}

// change is the entry that makes the guest's o (had: it is there, of the
// same type) what e is, if any is needed.
func change(e, o Entry, had bool, contextDir string) (agent.SyncEntry, bool) {
	switch {
	case e.Mode.IsDir():
		return agent.SyncEntry{Op: agent.SyncDir, Path: e.Path, Mode: agent.SyncMode(e.Mode)}, !had || o.Mode != e.Mode
	case e.Mode&fs.ModeSymlink != 0:
		return agent.SyncEntry{Op: agent.SyncSymlink, Path: e.Path, Link: e.Link}, !had || o.Link != e.Link
	case had && o.Size == e.Size && o.ModTime == e.ModTime:
		return agent.SyncEntry{Op: agent.SyncChmod, Path: e.Path, Mode: agent.SyncMode(e.Mode)}, o.Mode != e.Mode
	}
	abs := filepath.Join(contextDir, filepath.FromSlash(e.Path))
	return agent.SyncEntry{Op: agent.SyncFile, Path: e.Path, Mode: agent.SyncMode(e.Mode), Size: e.Size,
		Open: func() (io.ReadCloser, error) { return hostfile.Open(abs, e.Size) }}, true
}

func (m Manifest) byPath() map[string]Entry {
	out := make(map[string]Entry, len(m))
	for _, e := range m {
		out[e.Path] = e
	}
	return out
}

// Digest is the sha256, in hex, of the entries' paths, modes, sizes,
// modification times and links: two listings with the same digest send
// the same context (unless a file changed within its mtime's precision).
func (m Manifest) Digest() string {
	h := sha256.New()
	for _, e := range m {
		fmt.Fprintf(h, "%s\x00%o\x00%d\x00%d\x00%s\x00", e.Path, uint32(e.Mode), e.Size, e.ModTime, e.Link)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Newest is the latest modification time of the entries, the zero time
// for an empty manifest: an image built after it is not older than its
// context (deletions aside, which Digest tells).
func (m Manifest) Newest() time.Time {
	var ns int64
	for _, e := range m {
		ns = max(ns, e.ModTime)
	}
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// Save writes m to the file name as JSON, whole or not at all.
func (m Manifest) Save(name string) error {
	data, err := json.Marshal(m)
	if err == nil {
		err = atomicfile.WriteFile(name, data, 0o644)
	}
	if err != nil {
		return fmt.Errorf("saving the build context's manifest: %w", err)
	}
	return nil
}

// Load reads a manifest Save wrote. A missing file is an error that
// errors.Is fs.ErrNotExist: the guest holds nothing known yet.
func Load(name string) (Manifest, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("loading the build context's manifest: %w", err)
	}
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("loading the build context's manifest %s: %w", name, err)
	}
	return m, nil
}
