package watch

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestListLargeFile: a file is listed without its content, which Open
// reads from the host as exactly the size listed, even when the file
// shrank or grew since.
func TestListLargeFile(t *testing.T) {
	dir := t.TempDir()
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	if err := os.WriteFile(filepath.Join(dir, "big"), big, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "small"), []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	byPath := map[string]Entry{}
	if err := List(Rule{Service: "s", Path: dir, Target: "/t", Action: "sync"}, func(e Entry) error { byPath[e.Path] = e; return nil }); err != nil {
		t.Fatal(err)
	}
	e, s := byPath["big"], byPath["small"]
	if e.Data != nil || e.Size != int64(len(big)) {
		t.Fatalf("big: %d bytes in memory, size %d", len(e.Data), e.Size)
	}
	if s.Data != nil || s.Size != 3 || content(s) != "hi\n" {
		t.Errorf("small: %q in memory, size %d, content %q", s.Data, s.Size, content(s))
	}
	read := func() []byte {
		t.Helper()
		r, err := e.Open()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		b, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !bytes.Equal(read(), big) {
		t.Errorf("big: Open did not read the file")
	}
	if err := os.Truncate(filepath.Join(dir, "big"), 10); err != nil {
		t.Fatal(err)
	}
	if got := read(); len(got) != len(big) || !bytes.Equal(got[:10], big[:10]) || got[10] != 0 || got[len(got)-1] != 0 {
		t.Errorf("shrunk: %d bytes, %q...", len(got), got[:12])
	}
	if err := os.WriteFile(filepath.Join(dir, "big"), append(big, big...), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := read(); !bytes.Equal(got, big) {
		t.Errorf("grown: %d bytes, want the %d listed", len(got), len(big))
	}
	os.Remove(filepath.Join(dir, "big"))
	if _, err := e.Open(); err == nil {
		t.Errorf("Open of a file gone: no error")
	}
}
