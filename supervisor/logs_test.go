package supervisor

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

func TestServiceLogLines(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	l, err := openServiceLog(dir, "web-1", func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	boot := now.Add(-time.Minute)
	if l.offset(boot, "stdout") != 0 {
		t.Fatal("offset of a new boot")
	}
	l.writer("stdout").Write([]byte("one\ntw"))
	l.writer("stderr").Write([]byte("err\r\n"))
	l.writer("stdout").Write([]byte("o\nthr"))
	// A supervisor that dies now has "thr" only in memory: its successor
	// reads it again.
	l2, _ := openServiceLog(dir, "web-1", time.Now)
	if off := l2.offset(boot, "stdout"); off != int64(len("one\ntwo\n")) {
		t.Errorf("stdout offset with a partial line held: %d", off)
	}
	l2.Close()
	l.writer("stdout").Write([]byte("ee"))
	l.flush("stdout")
	l.Close()
	lines, _, err := ReadLog(dir, "web-1", 0)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, line := range lines {
		got = append(got, line.Stream+":"+line.Text)
		if !line.Time.Equal(now) {
			t.Errorf("time %v", line.Time)
		}
	}
	if g := strings.Join(got, ","); g != "stdout:one,stderr:err,stdout:two,stdout:three" {
		t.Errorf("lines: %s", g)
	}
	// A restarted supervisor resumes where the log ends, for the same boot.
	l, _ = openServiceLog(dir, "web-1", time.Now)
	if off := l.offset(boot, "stdout"); off != int64(len("one\ntwo\nthree")) {
		t.Errorf("stdout offset after reopening: %d", off)
	}
	if off := l.offset(boot.Add(time.Second), "stdout"); off != 0 {
		t.Errorf("offset of a new boot: %d", off)
	}
	l.Close()
	if tail, _, _ := ReadLog(dir, "web-1", 1); len(tail) != 1 || tail[0].Text != "three" {
		t.Errorf("tail 1: %+v", tail)
	}
}

// TestFollowRecreatedLog: a log removed and written again (its VM was
// recreated) is followed from its start, even when it is already as long
// as the old one by the time FollowLog looks, and on a file system that
// gives it the old one's inode number.
func TestFollowRecreatedLog(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(LogDir(dir), 0o700); err != nil {
		t.Fatal(err)
	}
	write := func(text string) { // as a recreate does: remove, then create
		t.Helper()
		os.Remove(LogPath(dir, "web-1"))
		if err := os.WriteFile(LogPath(dir, "web-1"), []byte("2026-01-02T03:04:05Z stdout "+text+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("hello one")
	lines := make(chan string, 10)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go FollowLog(ctx, dir, "web-1", 0, func(l LogLine) { lines <- l.Text })
	for _, want := range []string{"hello one", "hello two"} {
		select {
		case got := <-lines:
			if got != want {
				t.Fatalf("got %q, want %q", got, want)
			}
		case <-time.After(3 * time.Second):
			t.Fatalf("%q not followed within 3 s", want)
		}
		write("hello two")
	}
}
