package watch

import (
	"errors"
	"io/fs"
	"path/filepath"

	"github.com/vmcompose/vmcompose/internal/hostfile"
)

// List gives fn the entries that make the rule's target what its path is
// now (for initial_sync), in the order a Batch has them: "." first (the
// directory itself, or the file of a single-file rule), a directory
// before what it holds. Ignored paths are left out as a Watcher leaves
// them; files that vanish meanwhile too. It stops at fn's first error.
func List(r Rule, fn func(Entry) error) error {
	f, err := newFilter(r)
	if err != nil {
		return err
	}
	if f.fileRule {
		e, err := read(r.Path, ".")
		if err != nil {
			return nil
		}
		return fn(e)
	}
	return filepath.WalkDir(r.Path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		rel, ok := f.wants(p)
		if !ok {
			if d.IsDir() && f.skipped(p) && !f.descend(p) {
				return filepath.SkipDir
			}
			return nil
		}
		e, err := read(p, rel)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, hostfile.ErrSpecial) {
			return nil
		}
		if err != nil {
			return err
		}
		return fn(e)
	})
}
