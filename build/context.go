package build

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"

	"github.com/vmcompose/vmcompose/internal/hostfile"
)

// Entry is one path of a build context as it was listed.
type Entry struct {
	// Path is slash-separated and relative to the context directory.
	Path string `json:"path"`
	// Mode is the type (fs.ModeDir, fs.ModeSymlink, none for a regular
	// file) and the permission bits, with setuid, setgid and sticky.
	Mode fs.FileMode `json:"mode"`
	Size int64       `json:"size,omitempty"`
	// ModTime is a file's or link's modification time in nanoseconds
	// since the epoch. A directory's is 0: it changes when an ignored
	// file comes or goes, which changes nothing that is sent.
	ModTime int64  `json:"mtime,omitempty"`
	Link    string `json:"link,omitempty"` // a symlink's target, as the link holds it
}

// Manifest is a build context as docker would send it, sorted by path:
// a directory comes before what it holds.
type Manifest []Entry

// IgnoreFile is the ignore file a build honours: <dockerfile>.dockerignore
// beside the Dockerfile when there is one (BuildKit's rule), else the
// context's .dockerignore; "" when neither is there. A relative
// dockerfile is relative to contextDir, as compose's build.dockerfile is.
// Buildah 1.28 picks the same one by itself (tried: bud -f app.Dockerfile
// honours app.Dockerfile.dockerignore over .dockerignore).
func IgnoreFile(contextDir, dockerfile string) string {
	for _, c := range []string{dockerfilePath(contextDir, dockerfile) + ".dockerignore", filepath.Join(contextDir, ".dockerignore")} {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() {
			return c
		}
	}
	return ""
}

func dockerfilePath(contextDir, dockerfile string) string {
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	if filepath.IsAbs(dockerfile) {
		return filepath.Clean(dockerfile)
	}
	return filepath.Join(contextDir, dockerfile)
}

// ListContext lists what docker would send of contextDir for a build with
// dockerfile: all but what the ignore file (see IgnoreFile) leaves out,
// and the Dockerfile and the ignore file themselves even when a pattern
// matches them (docker sends them too). Symlinks are listed as links,
// never followed; sockets, pipes and devices are left out. A directory
// that is ignored is still walked when the patterns have exclusions (a
// "!pattern" may bring back something inside it), and listed when
// something inside it is.
func ListContext(contextDir, dockerfile string) (Manifest, error) {
	pm, err := ignorePatterns(IgnoreFile(contextDir, dockerfile))
	if err != nil {
		return nil, err
	}
	keep := map[string]bool{}
	for _, p := range []string{dockerfilePath(contextDir, dockerfile), IgnoreFile(contextDir, dockerfile)} {
		if rel, ok := under(contextDir, p); ok && p != "" && rel != "." {
			keep[rel] = true
		}
	}
	l := lister{root: contextDir, pm: pm, keep: keep, held: map[string]Entry{}}
	if err := filepath.WalkDir(contextDir, l.visit); err != nil {
		return nil, fmt.Errorf("listing the build context %s: %w", contextDir, err)
	}
	slices.SortFunc(l.out, func(a, b Entry) int { return strings.Compare(a.Path, b.Path) })
	return l.out, nil
}

func ignorePatterns(name string) (*patternmatcher.PatternMatcher, error) {
	if name == "" {
		return nil, nil
	}
	fd, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	patterns, err := ignorefile.ReadAll(fd)
	if err == nil {
		var pm *patternmatcher.PatternMatcher
		if pm, err = patternmatcher.New(patterns); err == nil {
			return pm, nil
		}
	}
	return nil, fmt.Errorf("reading %s: %w: write it in .dockerignore syntax", name, err)
}

// lister walks a context. held are the ignored directories walked for
// exclusions, listed only once something inside them is.
type lister struct {
	root string
	pm   *patternmatcher.PatternMatcher
	keep map[string]bool
	held map[string]Entry
	out  []Entry
}

func (l *lister) visit(p string, d fs.DirEntry, err error) error {
	if err != nil {
		return err
	}
	rel, _ := under(l.root, p)
	if rel == "." {
		return nil
	}
	e, err := readEntry(p, rel)
	if errors.Is(err, hostfile.ErrSpecial) {
		return nil
	}
	if err != nil {
		return err
	}
	if l.ignored(rel) {
		if !d.IsDir() {
			return nil
		}
		if !l.pm.Exclusions() && !l.holdsKept(rel) {
			return filepath.SkipDir
		}
		l.held[rel] = e
		return nil
	}
	for dir := path.Dir(rel); dir != "."; dir = path.Dir(dir) {
		if h, ok := l.held[dir]; ok {
			l.out = append(l.out, h)
			delete(l.held, dir)
		}
	}
	l.out = append(l.out, e)
	return nil
}

func (l *lister) ignored(rel string) bool {
	if l.pm == nil || l.keep[rel] {
		return false
	}
	m, _ := l.pm.MatchesOrParentMatches(rel)
	return m
}

// holdsKept is whether the directory rel holds a path sent regardless.
func (l *lister) holdsKept(rel string) bool {
	for k := range l.keep {
		if strings.HasPrefix(k, rel+"/") {
			return true
		}
	}
	return false
}

// readEntry is the entry of the host path abs, never following a link.
func readEntry(abs, rel string) (Entry, error) {
	fi, err := os.Lstat(abs)
	if err != nil {
		return Entry{}, err
	}
	m := fi.Mode()
	bits := m & (fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky)
	switch {
	case m.IsDir():
		return Entry{Path: rel, Mode: fs.ModeDir | bits}, nil
	case m&fs.ModeSymlink != 0:
		link, err := os.Readlink(abs)
		return Entry{Path: rel, Mode: fs.ModeSymlink | m.Perm(), ModTime: fi.ModTime().UnixNano(), Link: link}, err
	case m.IsRegular():
		return Entry{Path: rel, Mode: bits, Size: fi.Size(), ModTime: fi.ModTime().UnixNano()}, nil
	}
	return Entry{}, hostfile.ErrSpecial
}

// under is p relative to root, slash-separated, when p is root or inside
// it.
func under(root, p string) (string, bool) {
	rel, err := filepath.Rel(root, p)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", false
	}
	return filepath.ToSlash(rel), true
}
