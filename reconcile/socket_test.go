package reconcile

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSocketInADeepStateDir: the supervisor's socket works in a state dir
// too deep for a unix socket address.
func TestSocketInADeepStateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if len(SocketPath(dir)) <= maxSocketPath {
		t.Fatalf("%s is short enough: the test proves nothing", SocketPath(dir))
	}
	l, err := listenSupervisor(dir)
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
	c, err := DialSupervisor(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "hello" {
		t.Errorf("read %q", b)
	}
	if _, err := os.Stat(SocketPath(dir)); err != nil {
		t.Errorf("the socket is not at its real path: %v", err)
	}
}
