package watch

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// Rule is one develop.watch entry of a service, with its host path
// absolute (compose-go resolves it against the project directory).
type Rule struct {
	Service string
	Index   int // its position in develop.watch
	Path    string
	Target  string
	Action  types.WatchAction
	Ignore  []string // .dockerignore syntax, relative to Path
	Include []string // when set, only matching paths; relative to Path
	// IgnoreFile is a .dockerignore to honour ("" for none); its patterns
	// are relative to its own directory (the build context).
	IgnoreFile string
	// Skip are host paths at or under Path that are not synced: a bind
	// mount shares them already (see BindSkips).
	Skip []string
}

func (r Rule) String() string {
	return fmt.Sprintf("service %q: develop.watch[%d] (path %s)", r.Service, r.Index, r.Path)
}

// Rules are a service's develop.watch rules, each with the .dockerignore
// it honours and the sub-paths its bind mounts share already. A rule that
// a bind mount shares whole is left out, as docker compose leaves it out
// (the guest sees its changes live).
func Rules(svc types.ServiceConfig) []Rule {
	if svc.Develop == nil {
		return nil
	}
	var out []Rule
	for i, t := range svc.Develop.Watch {
		r := Rule{Service: svc.Name, Index: i, Path: filepath.Clean(t.Path), Target: t.Target,
			Action: t.Action, Ignore: t.Ignore, Include: t.Include, IgnoreFile: IgnoreFile(svc.Build, t.Path)}
		all, skip := BindSkips(svc.Volumes, r)
		if all {
			continue
		}
		r.Skip = skip
		out = append(out, r)
	}
	return out
}

// IgnoreFile is the .dockerignore docker compose honours for a watch path:
// the build context's (<Dockerfile>.dockerignore first, as BuildKit reads
// it), or, for a service without build:, the one in the path itself (in
// its directory when the path is a file). "" when there is none.
func IgnoreFile(build *types.BuildConfig, watchPath string) string {
	var candidates []string
	if build != nil && build.Context != "" {
		if build.Dockerfile != "" {
			df := build.Dockerfile
			if !filepath.IsAbs(df) {
				df = filepath.Join(build.Context, df)
			}
			candidates = append(candidates, df+".dockerignore")
		}
		candidates = append(candidates, filepath.Join(build.Context, ".dockerignore"))
	} else {
		dir := watchPath
		if fi, err := os.Stat(watchPath); err == nil && !fi.IsDir() {
			dir = filepath.Dir(watchPath)
		}
		candidates = append(candidates, filepath.Join(dir, ".dockerignore"))
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() {
			return c
		}
	}
	return ""
}

// BindSkips says what of a sync rule a bind mount of the service already
// shares at the place the rule would sync it to: all of it (the rule's
// path is inside a bind source mounted so that it lands on the rule's
// target), or the sub-paths returned (bind sources inside the rule's path
// mounted where the rule would put them). Rules without a target sync
// nothing and are never skipped.
func BindSkips(volumes []types.ServiceVolumeConfig, r Rule) (all bool, skip []string) {
	if r.Target == "" {
		return false, nil
	}
	for _, v := range volumes {
		if v.Type != types.VolumeTypeBind || v.Source == "" {
			continue
		}
		src := filepath.Clean(v.Source)
		if rel, ok := under(src, r.Path); ok && path.Join(v.Target, rel) == path.Clean(r.Target) {
			return true, nil
		}
		if rel, ok := under(r.Path, src); ok && rel != "." && path.Join(r.Target, rel) == path.Clean(v.Target) {
			skip = append(skip, src)
		}
	}
	return false, skip
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

// editorPatterns are the files editors and tools write beside the ones
// edited and remove soon after, which docker compose never syncs
// (its pkg/watch/ephemeral.go): vim's swap files and 4913 probe, backups
// ending in ~, emacs' lock and autosave files, JetBrains' safe-write
// files, kate's swap files, Go's umask probe, and macOS' .DS_Store.
var editorPatterns = []string{
	"**/*.swp", "**/*.swx", "**/*.swo", "**/*.swn", "**/4913", "**/*~",
	"**/.#*", "**/#*#",
	"**/*___jb_old___", "**/*___jb_tmp___",
	"**/.*.kate-swp", "**/*-go-tmp-umask", "**/.DS_Store",
	"**/.git",
}

// filter says which paths of a rule are synced.
type filter struct {
	root     string
	ignore   []rooted // any match ignores
	include  *patternmatcher.PatternMatcher
	skip     []string
	fileRule bool // the rule's path is a file
}

type rooted struct {
	root string
	pm   *patternmatcher.PatternMatcher
}

func newFilter(r Rule) (*filter, error) {
	f := &filter{root: r.Path, skip: r.Skip}
	if fi, err := os.Stat(r.Path); err == nil && !fi.IsDir() {
		f.fileRule = true
	}
	add := func(root string, patterns []string) error {
		if len(patterns) == 0 {
			return nil
		}
		pm, err := patternmatcher.New(patterns)
		if err != nil {
			return err
		}
		f.ignore = append(f.ignore, rooted{root, pm})
		return nil
	}
	if err := add(r.Path, editorPatterns); err != nil {
		return nil, err
	}
	if err := add(r.Path, r.Ignore); err != nil {
		return nil, fmt.Errorf("%s: ignore: %w: write them in .dockerignore syntax", r, err)
	}
	if r.IgnoreFile != "" {
		patterns, err := readIgnoreFile(r.IgnoreFile)
		if err == nil {
			err = add(filepath.Dir(r.IgnoreFile), patterns)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: reading %s: %w", r, r.IgnoreFile, err)
		}
	}
	if len(r.Include) > 0 {
		pm, err := patternmatcher.New(r.Include)
		if err != nil {
			return nil, fmt.Errorf("%s: include: %w: write them in .dockerignore syntax", r, err)
		}
		f.include = pm
	}
	return f, nil
}

func readIgnoreFile(name string) ([]string, error) {
	fd, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	return ignorefile.ReadAll(fd)
}

// rel is abs relative to the rule's path ("." for the path itself), and
// whether abs belongs to the rule at all.
func (f *filter) rel(abs string) (string, bool) {
	if f.fileRule {
		return ".", abs == f.root
	}
	return under(f.root, abs)
}

// skipped is whether abs (inside the rule) is not synced, nor, when it is
// a directory, anything in it.
func (f *filter) skipped(abs string) bool {
	for _, s := range f.skip {
		if _, ok := under(s, abs); ok {
			return true
		}
	}
	for _, ig := range f.ignore {
		rel, ok := under(ig.root, abs)
		if !ok || rel == "." {
			continue
		}
		if m, _ := ig.pm.MatchesOrParentMatches(rel); m {
			return true
		}
	}
	return false
}

// descend is whether a skipped directory must still be walked: an
// exclusion (!pattern) may bring back something inside it.
func (f *filter) descend(abs string) bool {
	if f.fileRule {
		return false
	}
	for _, s := range f.skip {
		if _, ok := under(s, abs); ok {
			return false
		}
	}
	for _, ig := range f.ignore {
		if ig.pm.Exclusions() {
			return true
		}
	}
	return false
}

// included is whether a path that is not skipped is synced: with
// include:, only the paths that match (or are inside a match).
func (f *filter) included(rel string) bool {
	if f.include == nil || rel == "." {
		return true
	}
	m, _ := f.include.MatchesOrParentMatches(rel)
	return m
}

// wants is whether the rule syncs abs.
func (f *filter) wants(abs string) (string, bool) {
	rel, ok := f.rel(abs)
	if !ok || f.skipped(abs) || !f.included(rel) {
		return "", false
	}
	return rel, true
}
