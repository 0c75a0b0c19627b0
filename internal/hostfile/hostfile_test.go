package hostfile

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func read(t *testing.T, abs string, size int64) (string, error) {
	t.Helper()
	r, err := Open(abs, size)
	if err != nil {
		return "", err
	}
	defer r.Close()
	data, err := io.ReadAll(r)
	return string(data), err
}

func TestOpenGivesExactlySizeBytes(t *testing.T) {
	f := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(f, []byte("abcd"), 0o644); err != nil {
		t.Fatal(err)
	}
	for size, want := range map[int64]string{4: "abcd", 2: "ab", 6: "abcd\x00\x00"} {
		if got, err := read(t, f, size); err != nil || got != want {
			t.Errorf("Open(f, %d) read %q, %v; want %q", size, got, err, want)
		}
	}
}

func TestOpenRefusesLinksAndSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("f"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("f", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if _, err := read(t, filepath.Join(dir, "link"), 1); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("Open of a symlink: %v, want ELOOP", err)
	}
	if _, err := read(t, dir, 1); !errors.Is(err, ErrSpecial) {
		t.Errorf("Open of a directory: %v, want ErrSpecial", err)
	}
}
