package devloop

import (
	"io/fs"
	"path"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/watch"
)

// syncEntries is what the agent is sent for a rule's entries, and the
// target they are relative to. A single-file rule's entries are all "."
// (the file itself), which the guest refuses to write over its target:
// they go to the target's directory under the target's name instead.
func syncEntries(target string, fileRule bool, in []watch.Entry) (string, []agent.SyncEntry) {
	name := "."
	if fileRule {
		target, name = path.Dir(target), path.Base(target)
	}
	out := make([]agent.SyncEntry, 0, len(in))
	for _, e := range in {
		p := e.Path
		if p == "." {
			p = name
		}
		out = append(out, syncEntry(p, e))
	}
	return target, out
}

func syncEntry(p string, e watch.Entry) agent.SyncEntry {
	switch {
	case e.Op == watch.Delete:
		return agent.SyncEntry{Op: agent.SyncDelete, Path: p}
	case e.Op == watch.Mkdir:
		return agent.SyncEntry{Op: agent.SyncDir, Path: p, Mode: agent.SyncMode(e.Mode)}
	case e.Mode&fs.ModeSymlink != 0:
		return agent.SyncEntry{Op: agent.SyncSymlink, Path: p, Link: e.Link}
	}
	size := e.Size
	if e.Data != nil {
		size = int64(len(e.Data))
	}
	return agent.SyncEntry{Op: agent.SyncFile, Path: p, Mode: agent.SyncMode(e.Mode), Size: size, Open: e.Open}
}
