package build

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/guest/agent"
)

// tree writes files (path: content; a path ending in / is a directory)
// under dir, all with one old mtime, so that an edit shows.
func tree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	old := time.Unix(1_700_000_000, 0)
	for p, content := range files {
		abs := filepath.Join(dir, filepath.FromSlash(p))
		if p[len(p)-1] == '/' {
			if err := os.MkdirAll(abs, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(abs, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(abs, old, old); err != nil {
			t.Fatal(err)
		}
	}
}

func paths(m Manifest) []string {
	var out []string
	for _, e := range m {
		out = append(out, e.Path)
	}
	return out
}

func list(t *testing.T, dir, dockerfile string) Manifest {
	t.Helper()
	m, err := ListContext(dir, dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestListContextHonoursDockerignore(t *testing.T) {
	dir := t.TempDir()
	tree(t, dir, map[string]string{
		".dockerignore": "**/*.log\nsecret\nvendor\n!vendor/keep\nDockerfile\n.dockerignore\n",
		"Dockerfile":    "FROM scratch\n",
		"a.log":         "x", "sub/b.log": "x", "sub/c.txt": "c",
		"secret/key": "k", "vendor/drop": "d", "vendor/keep": "k",
		"empty/": "",
	})
	if err := os.Symlink("sub/c.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := list(t, dir, "Dockerfile")
	want := []string{".dockerignore", "Dockerfile", "empty", "link", "sub", "sub/c.txt", "vendor", "vendor/keep"}
	if got := paths(m); !slices.Equal(got, want) {
		t.Fatalf("listed %q, want %q", got, want)
	}
	link := m[slices.IndexFunc(m, func(e Entry) bool { return e.Path == "link" })]
	if link.Mode&fs.ModeSymlink == 0 || link.Link != "sub/c.txt" {
		t.Errorf("link listed as %+v, want a symlink to sub/c.txt", link)
	}
	if e := m[2]; !e.Mode.IsDir() || e.ModTime != 0 {
		t.Errorf("empty listed as %+v, want a directory without mtime", e)
	}
}

func TestListContextPrefersTheDockerfilesIgnoreFile(t *testing.T) {
	dir := t.TempDir()
	tree(t, dir, map[string]string{
		".dockerignore":                      "*.txt\n",
		"docker/app.Dockerfile":              "FROM scratch\n",
		"docker/app.Dockerfile.dockerignore": "*.md\ndocker\n",
		"a.txt":                              "a", "readme.md": "r",
	})
	got := paths(list(t, dir, "docker/app.Dockerfile"))
	want := []string{".dockerignore", "a.txt", "docker", "docker/app.Dockerfile", "docker/app.Dockerfile.dockerignore"}
	if !slices.Equal(got, want) {
		t.Errorf("with docker/app.Dockerfile: listed %q, want %q", got, want)
	}
	if f := IgnoreFile(dir, "docker/app.Dockerfile"); f != filepath.Join(dir, "docker/app.Dockerfile.dockerignore") {
		t.Errorf("IgnoreFile = %s", f)
	}
	got = paths(list(t, dir, "Dockerfile"))
	want = []string{".dockerignore", "docker", "docker/app.Dockerfile", "docker/app.Dockerfile.dockerignore", "readme.md"}
	if !slices.Equal(got, want) {
		t.Errorf("with Dockerfile: listed %q, want %q", got, want)
	}
}

// describe is a batch as text, with each file's content.
func describe(t *testing.T, entries []agent.SyncEntry) []string {
	t.Helper()
	var out []string
	for _, e := range entries {
		switch e.Op {
		case agent.SyncFile:
			r, err := e.Open()
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(r)
			r.Close()
			out = append(out, fmt.Sprintf("file %s %o %q", e.Path, e.Mode, data))
		case agent.SyncSymlink:
			out = append(out, fmt.Sprintf("symlink %s -> %s", e.Path, e.Link))
		case agent.SyncDelete:
			out = append(out, "delete "+e.Path)
		default:
			out = append(out, fmt.Sprintf("%s %s %o", e.Op, e.Path, e.Mode))
		}
	}
	return out
}

func checkBatch(t *testing.T, what string, got []agent.SyncEntry, want ...string) {
	t.Helper()
	if d := describe(t, got); !slices.Equal(d, want) {
		t.Errorf("%s: sent\n%q\nwant\n%q", what, d, want)
	}
}

func TestChangesSendOnlyWhatChanged(t *testing.T) {
	dir := t.TempDir()
	tree(t, dir, map[string]string{"Dockerfile": "FROM scratch\n", "src/a.go": "a", "src/b.go": "b"})
	if err := os.Symlink("src/a.go", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	first := list(t, dir, "")
	checkBatch(t, "first", first.Changes(nil, dir),
		`file Dockerfile 644 "FROM scratch\n"`, "symlink link -> src/a.go", "dir src 755",
		`file src/a.go 644 "a"`, `file src/b.go 644 "b"`)
	if again := list(t, dir, ""); len(again.Changes(first, dir)) != 0 || again.Digest() != first.Digest() {
		t.Errorf("an unchanged context sends %q, digest %s then %s", describe(t, again.Changes(first, dir)), first.Digest(), again.Digest())
	}

	// The same size: the mtime tells the edit.
	if err := os.WriteFile(filepath.Join(dir, "src/b.go"), []byte("B"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "src/a.go"), 0o600); err != nil {
		t.Fatal(err)
	}
	second := list(t, dir, "")
	checkBatch(t, "after an edit and a chmod", second.Changes(first, dir), "chmod src/a.go 600", `file src/b.go 644 "B"`)
	if second.Digest() == first.Digest() {
		t.Error("the digest did not change with an edit")
	}
	// The link is the newest at first (made after tree set the old mtime).
	li, _ := os.Lstat(filepath.Join(dir, "link"))
	fi, _ := os.Stat(filepath.Join(dir, "src/b.go"))
	if !first.Newest().Equal(li.ModTime()) || !second.Newest().Equal(fi.ModTime()) {
		t.Errorf("Newest = %v then %v, want %v then %v", first.Newest(), second.Newest(), li.ModTime(), fi.ModTime())
	}
}

func TestChangesDeleteWhatIsGoneOnce(t *testing.T) {
	dir := t.TempDir()
	tree(t, dir, map[string]string{"Dockerfile": "", "x": "x", "sub/deep/a": "a", "sub/b": "b", "sub-c": "c"})
	prev := list(t, dir, "")
	for _, p := range []string{"x", "sub", "sub-c"} {
		if err := os.RemoveAll(filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	checkBatch(t, "after deletes", list(t, dir, "").Changes(prev, dir), "delete sub", "delete sub-c", "delete x")
}

func TestChangesTypeChangeIsDeleteAndCreate(t *testing.T) {
	dir := t.TempDir()
	tree(t, dir, map[string]string{"Dockerfile": "", "a": "file", "d/in": "in"})
	prev := list(t, dir, "")
	for _, p := range []string{"a", "d"} {
		if err := os.RemoveAll(filepath.Join(dir, p)); err != nil {
			t.Fatal(err)
		}
	}
	tree(t, dir, map[string]string{"a/b": "b", "d": "now a file"})
	checkBatch(t, "after file->dir and dir->file", list(t, dir, "").Changes(prev, dir),
		"delete a", "delete d", "dir a 755", `file a/b 644 "b"`, `file d 644 "now a file"`)
}

func TestManifestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	tree(t, dir, map[string]string{"Dockerfile": "FROM scratch\n", "src/a": "a"})
	m := list(t, dir, "")
	name := filepath.Join(t.TempDir(), "context.json")
	if _, err := Load(name); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing manifest: %v, want fs.ErrNotExist", err)
	}
	if err := m.Save(name); err != nil {
		t.Fatal(err)
	}
	got, err := Load(name)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, m) || got.Digest() != m.Digest() {
		t.Errorf("loaded %+v, saved %+v", got, m)
	}
}

// buildah's own listing of the same tree, copied in with COPY . /ctx
// (testdata/ignore.out), is what ListContext sends but the Dockerfile
// and the .dockerignore: sent for buildah to read, and left out of the
// COPY by buildah itself, since the patterns match them.
func TestListContextMatchesBuildah(t *testing.T) {
	ignore, err := os.ReadFile("testdata/ignore.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tree(t, dir, map[string]string{
		".dockerignore": string(ignore), "Dockerfile": "FROM scratch\n",
		"a.log": "x", "sub/b.log": "x", "sub/c.txt": "c", "secret/key": "k", "vendor/drop": "d", "vendor/keep": "k",
		"deep/a/b/x": "x", "deep/a/b/y": "y", "empty/": "",
	})
	if err := os.Symlink("sub/c.txt", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile("testdata/ignore.out")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, l := range strings.Split(string(out), "\n") {
		if p, ok := strings.CutPrefix(l, "./"); ok {
			want = append(want, p)
		}
	}
	got := slices.DeleteFunc(paths(list(t, dir, "Dockerfile")), func(p string) bool { return p == "Dockerfile" || p == ".dockerignore" })
	if !slices.Equal(got, want) {
		t.Errorf("listed %q, buildah copied %q", got, want)
	}
}
