package watch

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestFiles: a save by rename-over-write, a plain write and a file that
// did not exist yet are each one change of their name, however many
// events they make; other files in the same directory and a directory
// that does not exist are not.
func TestFiles(t *testing.T) {
	dir := t.TempDir()
	compose, env := filepath.Join(dir, "compose.yaml"), filepath.Join(dir, ".env")
	write(t, compose, "a")
	f, err := NewFiles([]string{compose, env, filepath.Join(dir, "gone", "x.env")}, Options{Warn: func(err error) { t.Errorf("warning: %v", err) }})
	check(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan string, 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		check(t, f.Run(ctx, func(changed []string) { ch <- strings.Join(changed, " ") }))
	}()
	t.Cleanup(func() { cancel(); <-done })
	want := func(what, names string) {
		t.Helper()
		select {
		case got := <-ch:
			if got != names {
				t.Errorf("%s: changed %q, want %q", what, got, names)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: nothing within 5 s", what)
		}
		select {
		case got := <-ch:
			t.Errorf("%s: a second change %q", what, got)
		case <-time.After(300 * time.Millisecond):
		}
	}

	// An editor's save: a temporary file, then renamed over the old one.
	write(t, filepath.Join(dir, "compose.yaml.tmp"), "b")
	check(t, os.Rename(filepath.Join(dir, "compose.yaml.tmp"), compose))
	want("rename over", compose)
	write(t, compose, "c")
	want("a write after the rename", compose)
	write(t, env, "A=1")
	want("a new file", env)
	write(t, filepath.Join(dir, "other.yaml"), "x")
	write(t, compose, "d")
	write(t, env, "A=2")
	want("two files and another", env+" "+compose)
}
