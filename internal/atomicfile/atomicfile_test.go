package atomicfile_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vmcompose/vmcompose/internal/atomicfile"
)

// names lists the directory, temporary files included.
func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return out
}

func check(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != content || fi.Mode().Perm() != mode {
		t.Errorf("%s: %q mode %v, want %q mode %v", filepath.Base(path), b, fi.Mode().Perm(), content, mode)
	}
	if got := names(t, filepath.Dir(path)); len(got) != 1 {
		t.Errorf("directory holds %v, want only %s", got, filepath.Base(path))
	}
}

func TestWriteFileCreatesAndReplaces(t *testing.T) {
	old := syscall.Umask(0o077)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "state.json")
	if err := atomicfile.WriteFile(path, []byte("one"), 0o644); err != nil {
		t.Fatal(err)
	}
	check(t, path, "one", 0o644) // the mode is applied, the umask is not
	if err := atomicfile.WriteFile(path, []byte("two"), 0o444); err != nil {
		t.Fatal(err)
	}
	check(t, path, "two", 0o444)
}

func TestFailedWriteKeepsTheOldFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "index.json")
	if err := atomicfile.WriteFile(path, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	err := atomicfile.Write(path, 0o644, func(f *os.File) error {
		f.WriteString("half of the new")
		if !strings.HasPrefix(filepath.Base(f.Name()), atomicfile.TempPrefix+"index.json-") {
			t.Errorf("temporary file %s: want %sindex.json-…", f.Name(), atomicfile.TempPrefix)
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("got %v, want the callback's error", err)
	}
	check(t, path, "old", 0o644)
}

func TestCreateStreamsAndCommits(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blob")
	f, err := atomicfile.Create(path, 0o444)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Cleanup()
	if _, err := f.WriteAt([]byte("world"), 6); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("hello "), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target exists before Commit: %v", err)
	}
	if err := f.Commit(); err != nil {
		t.Fatal(err)
	}
	f.Cleanup() // after Commit: leaves the file alone
	check(t, path, "hello world", 0o444)
}

func TestCleanupWithoutCommitRemovesTheTemporaryFile(t *testing.T) {
	dir := t.TempDir()
	f, err := atomicfile.Create(filepath.Join(dir, "x"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("data")
	f.Cleanup()
	f.Cleanup()
	if got := names(t, dir); len(got) != 0 {
		t.Errorf("left behind: %v", got)
	}
}

func TestCommitFailureLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.Mkdir(target, 0o755); err != nil { // a file cannot replace a directory
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(target, "keep"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	err := atomicfile.WriteFile(target, []byte("x"), 0o644)
	if err == nil {
		t.Fatal("a file replaced a non-empty directory")
	}
	if got := names(t, dir); len(got) != 1 || got[0] != "target" {
		t.Errorf("directory holds %v, want only target", got)
	}
}
