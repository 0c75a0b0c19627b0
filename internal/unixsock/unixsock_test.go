package unixsock

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSocketInADeepDir: a socket works in a folder too deep for a unix
// socket address, and its file is at its real path.
func TestSocketInADeepDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "test.sock")
	if len(path) <= MaxPath {
		t.Fatalf("%s is short enough: the test proves nothing", path)
	}
	l, err := Listen(dir, "test.sock")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			io.WriteString(c, "hello")
			c.Close()
		}
	}()
	c, err := Dial(context.Background(), dir, "test.sock")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "hello" {
		t.Errorf("read %q", b)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the socket is not at its real path: %v", err)
	}
}
