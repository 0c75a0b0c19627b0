package watch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watching starts a Watcher on rules and returns its batches; warnings
// fail the test unless warn takes them.
func watching(t *testing.T, opts Options, rules ...Rule) <-chan Batch {
	t.Helper()
	if opts.Warn == nil {
		opts.Warn = func(err error) { t.Errorf("warning: %v", err) }
	}
	w, err := New(rules, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan Batch, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := w.Run(ctx, func(b Batch) { ch <- b }); err != nil {
			t.Error(err)
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return ch
}

func next(t *testing.T, ch <-chan Batch) Batch {
	t.Helper()
	select {
	case b := <-ch:
		return b
	case <-time.After(5 * time.Second):
		t.Fatal("no batch within 5 s")
	}
	return Batch{}
}

// nothing checks that no batch comes (a batch goes 25 ms after the last
// event; 300 ms is plenty on a loaded machine).
func nothing(t *testing.T, ch <-chan Batch) {
	t.Helper()
	select {
	case b := <-ch:
		t.Fatalf("unexpected batch:\n%s", show(b))
	case <-time.After(300 * time.Millisecond):
	}
}

// show is a batch's entries one a line: "write a/b 0644 "data"",
// "write l -> target", "mkdir d 0755", "delete x".
func show(b Batch) string {
	var lines []string
	for _, e := range b.Entries {
		switch {
		case e.Op == Delete:
			lines = append(lines, "delete "+e.Path)
		case e.Op == Mkdir:
			lines = append(lines, fmt.Sprintf("mkdir %s %#o", e.Path, e.Mode.Perm()))
		case e.Link != "":
			lines = append(lines, fmt.Sprintf("write %s -> %s", e.Path, e.Link))
		default:
			lines = append(lines, fmt.Sprintf("write %s %#o %q", e.Path, e.Mode, content(e)))
		}
	}
	return strings.Join(lines, "\n")
}

// content is what Open reads of e, or why it cannot.
func content(e Entry) string {
	r, err := e.Open()
	if err != nil {
		return err.Error()
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

func expect(t *testing.T, ch <-chan Batch, want string) {
	t.Helper()
	if got := show(next(t, ch)); got != strings.TrimSpace(want) {
		t.Fatalf("batch:\n%s\nwant:\n%s", got, strings.TrimSpace(want))
	}
}

func write(t *testing.T, name, data string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
}

func check(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func rule(dir string) Rule {
	return Rule{Service: "web", Path: dir, Target: "/app", Action: "sync"}
}

func TestWriteDeleteRename(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "old"), "1")
	ch := watching(t, Options{}, rule(dir))

	write(t, filepath.Join(dir, "a.txt"), "hello")
	expect(t, ch, `write a.txt 0644 "hello"`)

	check(t, os.Chmod(filepath.Join(dir, "a.txt"), 0o755))
	expect(t, ch, `write a.txt 0755 "hello"`)

	check(t, os.Remove(filepath.Join(dir, "a.txt")))
	expect(t, ch, `delete a.txt`)

	check(t, os.Rename(filepath.Join(dir, "old"), filepath.Join(dir, "new")))
	expect(t, ch, "delete old\nwrite new 0644 \"1\"")

	write(t, filepath.Join(dir, "d1/sub/f"), "f")
	expect(t, ch, "mkdir d1 0755\nmkdir d1/sub 0755\nwrite d1/sub/f 0644 \"f\"")
	check(t, os.Rename(filepath.Join(dir, "d1"), filepath.Join(dir, "d2")))
	expect(t, ch, "delete d1\nmkdir d2 0755\nmkdir d2/sub 0755\nwrite d2/sub/f 0644 \"f\"")
	write(t, filepath.Join(dir, "d2/sub/f"), "moved")
	expect(t, ch, `write d2/sub/f 0644 "moved"`)
}

// TestUnreadable: a file that cannot be read is said in a warning, and
// the rest of the batch goes.
func TestUnreadable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads any file")
	}
	dir := t.TempDir()
	warned := make(chan error, 10)
	ch := watching(t, Options{Warn: func(err error) { warned <- err }}, rule(dir))
	write(t, filepath.Join(dir, "ok"), "ok")
	check(t, os.WriteFile(filepath.Join(dir, "locked"), []byte("x"), 0o000))
	expect(t, ch, `write ok 0644 "ok"`)
	if err := <-warned; !strings.Contains(err.Error(), "locked: permission denied: the guest keeps what it has there") {
		t.Errorf("warning: %v", err)
	}
}

// TestNewTreeWithContent: files made in a new directory before its watch
// exists, and a tree moved in whole (a git checkout, an unpacked
// archive), are all in the batch, and what comes later in them too.
func TestNewTreeWithContent(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	write(t, filepath.Join(outside, "t/x/y"), "moved")
	ch := watching(t, Options{}, rule(dir))

	check(t, os.MkdirAll(filepath.Join(dir, "a/b"), 0o755))
	write(t, filepath.Join(dir, "a/b/c"), "c")
	expect(t, ch, "mkdir a 0755\nmkdir a/b 0755\nwrite a/b/c 0644 \"c\"")
	write(t, filepath.Join(dir, "a/b/d"), "later")
	expect(t, ch, `write a/b/d 0644 "later"`)

	check(t, os.Rename(filepath.Join(outside, "t"), filepath.Join(dir, "t")))
	expect(t, ch, "mkdir t 0755\nmkdir t/x 0755\nwrite t/x/y 0644 \"moved\"")
	write(t, filepath.Join(dir, "t/x/z"), "z")
	expect(t, ch, `write t/x/z 0644 "z"`)
}

// TestDeletedDirectory: rm -rf of a tree is one delete; a tree moved out
// is one delete too, and what is written in it then is not reported under
// its old name.
func TestDeletedDirectory(t *testing.T) {
	dir, outside := t.TempDir(), t.TempDir()
	for _, f := range []string{"gone/a", "gone/sub/b", "gone/sub/deep/c", "moved/sub/d"} {
		write(t, filepath.Join(dir, f), "x")
	}
	ch := watching(t, Options{}, rule(dir))

	check(t, os.RemoveAll(filepath.Join(dir, "gone")))
	expect(t, ch, "delete gone")

	check(t, os.Rename(filepath.Join(dir, "moved"), filepath.Join(outside, "moved")))
	expect(t, ch, "delete moved")
	write(t, filepath.Join(outside, "moved/sub/e"), "outside")
	nothing(t, ch)
}

// TestReplacedDirectory: a directory removed and made again in one batch
// is deleted first, so what it held in the guest goes.
func TestReplacedDirectory(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "d/old"), "x")
	ch := watching(t, Options{}, rule(dir))
	check(t, os.RemoveAll(filepath.Join(dir, "d")))
	write(t, filepath.Join(dir, "d/new"), "y")
	expect(t, ch, "delete d\nmkdir d 0755\nwrite d/new 0644 \"y\"")
}

// TestIgnored: the rule's ignore, the .dockerignore (with an exception),
// include, editor temp files and .git are not reported; a batch made
// only of them does not come at all.
func TestIgnored(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, ".dockerignore"), "# build output\nbuild/\n*.log\n!keep.log\n")
	check(t, os.MkdirAll(filepath.Join(dir, ".git/objects"), 0o755))
	check(t, os.MkdirAll(filepath.Join(dir, "node_modules"), 0o755))
	r := rule(dir)
	r.Ignore = []string{"node_modules/", "secret.txt"}
	r.IgnoreFile = IgnoreFile(nil, dir)
	ch := watching(t, Options{}, r)

	for _, f := range []string{".git/objects/ab", ".git/index", "node_modules/x/index.js", "secret.txt",
		"build/out.o", "app.log", ".main.go.swp", "main.go~", ".#main.go", "#main.go#", "4913", ".DS_Store", "x.swx"} {
		write(t, filepath.Join(dir, f), "ignored")
	}
	nothing(t, ch)
	write(t, filepath.Join(dir, "keep.log"), "kept")
	write(t, filepath.Join(dir, "main.go"), "package main")
	expect(t, ch, "write keep.log 0644 \"kept\"\nwrite main.go 0644 \"package main\"")

	r2 := rule(t.TempDir())
	r2.Include = []string{"*.go"}
	ch2 := watching(t, Options{}, r2)
	write(t, filepath.Join(r2.Path, "README.md"), "no")
	write(t, filepath.Join(r2.Path, "x.go"), "yes")
	expect(t, ch2, `write x.go 0644 "yes"`)
}

// TestSymlink: a link is reported as a link, whatever it points to, and
// never followed.
func TestSymlink(t *testing.T) {
	dir := t.TempDir()
	ch := watching(t, Options{}, rule(dir))
	check(t, os.Symlink("/etc/passwd", filepath.Join(dir, "l")))
	check(t, os.Symlink("..", filepath.Join(dir, "up")))
	expect(t, ch, "write l -> /etc/passwd\nwrite up -> ..")
}

// TestBurst: 1 000 files written at once (a checkout) are one batch.
func TestBurst(t *testing.T) {
	dir := t.TempDir()
	ch := watching(t, Options{}, rule(dir))
	start := time.Now()
	for i := range 1000 {
		write(t, filepath.Join(dir, fmt.Sprintf("d%d/f%d", i%10, i)), "x")
	}
	took := time.Since(start)
	b := next(t, ch)
	if len(b.Entries) != 1010 {
		t.Fatalf("the burst (written in %v) came as a batch of %d entries, then %d more batches; want one of 1010", took, len(b.Entries), len(ch))
	}
	nothing(t, ch)
	t.Logf("1 000 files written in %v, one batch", took)
}

// TestSingleFile: a rule whose path is a file follows that file through
// an editor's save by rename, and nothing else of its directory.
func TestSingleFile(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "nginx.conf")
	write(t, name, "v1")
	r := rule(name)
	r.Target = "/etc/nginx/nginx.conf"
	ch := watching(t, Options{}, r)

	write(t, filepath.Join(dir, "other"), "x")
	write(t, name+".tmp", "v2")
	check(t, os.Rename(name+".tmp", name))
	expect(t, ch, `write . 0644 "v2"`)
	write(t, name, "v3")
	expect(t, ch, `write . 0644 "v3"`)
	check(t, os.Remove(name))
	expect(t, ch, `delete .`)
}

// TestWatchesUsedUp: when inotify has no watch left, the warning names
// the sysctl, its value and the fix, once, and the directories watched
// already go on reporting.
func TestWatchesUsedUp(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"a", "b", "c"} {
		check(t, os.Mkdir(filepath.Join(dir, d), 0o755))
	}
	var warnings []error
	opts := Options{
		Warn: func(err error) { warnings = append(warnings, err) },
		addWatch: func(fsw *fsnotify.Watcher, d string) error {
			if d != dir {
				return fmt.Errorf("inotify_add_watch: %w", syscall.ENOSPC)
			}
			return fsw.Add(d)
		},
	}
	ch := watching(t, opts, rule(dir))
	n := sysctlInt("fs.inotify.max_user_watches")
	want := fmt.Sprintf("watching %s: no inotify watch is left, one is needed per directory (fs.inotify.max_user_watches = %d): raise it with `sysctl fs.inotify.max_user_watches=%d` as root (a file in /etc/sysctl.d/ keeps it across boots); changes under %[1]s and the directories after it are not seen until then; the rest is watched",
		filepath.Join(dir, "a"), n, max(2*n, 524288))
	if len(warnings) != 1 || warnings[0].Error() != want {
		t.Fatalf("warnings %q\nwant one: %s", warnings, want)
	}
	write(t, filepath.Join(dir, "top"), "seen")
	expect(t, ch, `write top 0644 "seen"`)
}

func TestList(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "src/main.go"), "m")
	write(t, filepath.Join(dir, "src/main.go~"), "backup")
	write(t, filepath.Join(dir, ".git/HEAD"), "ref")
	write(t, filepath.Join(dir, "tmp/x"), "ignored")
	check(t, os.Symlink("main.go", filepath.Join(dir, "src/link")))
	r := rule(dir)
	r.Ignore = []string{"tmp"}
	var b Batch
	check(t, List(r, func(e Entry) error { b.Entries = append(b.Entries, e); return nil }))
	want := "mkdir . 0755\nmkdir src 0755\nwrite src/link -> main.go\nwrite src/main.go 0644 \"m\""
	if got := show(b); got != want {
		t.Fatalf("list:\n%s\nwant:\n%s", got, want)
	}
	stop := errors.New("stop")
	if err := List(r, func(Entry) error { return stop }); err != stop {
		t.Fatalf("List returned %v, want fn's error", err)
	}
}

// TestTwoRules: rules of two services on one tree share its watches and
// get a batch each, with their own ignores; a skipped sub-path (a bind
// mount shares it) is not reported.
func TestTwoRules(t *testing.T) {
	dir := t.TempDir()
	check(t, os.Mkdir(filepath.Join(dir, "static"), 0o755))
	web, worker := rule(dir), rule(dir)
	worker.Service, worker.Ignore = "worker", []string{"**/*.css"} // .dockerignore syntax: *.css is the top level only
	web.Skip = []string{filepath.Join(dir, "static")}
	ch := watching(t, Options{}, web, worker)
	write(t, filepath.Join(dir, "static/site.css"), "css")
	write(t, filepath.Join(dir, "static/app.js"), "js")
	b := next(t, ch)
	if b.Rule.Service != "worker" || show(b) != `write static/app.js 0644 "js"` {
		t.Fatalf("batch of %s:\n%s\nwant worker's app.js only", b.Rule.Service, show(b))
	}
	nothing(t, ch)
}

// TestOverflow: when the kernel drops events, every rule's tree is read
// again whole into the next batch, with a warning that says so.
func TestOverflow(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "a/b"), "b")
	var warned []error
	w, err := New([]Rule{rule(dir)}, Options{Warn: func(err error) { warned = append(warned, err) }})
	check(t, err)
	defer w.fsw.Close()
	w.fsError(fsnotify.ErrEventOverflow)
	var got Batch
	w.gathers[0].first, w.gathers[0].last = time.Time{}.Add(time.Nanosecond), time.Time{}.Add(time.Nanosecond) // due long ago
	w.flush(func(b Batch) { got = b })
	if want := "mkdir . 0755\nmkdir a 0755\nwrite a/b 0644 \"b\""; show(got) != want {
		t.Errorf("batch after an overflow:\n%s\nwant:\n%s", show(got), want)
	}
	if len(warned) != 1 || !strings.Contains(warned[0].Error(), "fs.inotify.max_queued_events") {
		t.Errorf("warnings %q, want one naming fs.inotify.max_queued_events", warned)
	}
}
