package devloop

import (
	"io"
	"io/fs"
	"reflect"
	"strings"
	"testing"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/watch"
)

// TestSyncEntries: each watch op becomes its agent op with chmod's mode
// bits, a file's content is what the batch read, and a single-file rule's
// "." goes to the target's directory under the target's name.
func TestSyncEntries(t *testing.T) {
	target, got := syncEntries("/app", false, []watch.Entry{
		{Path: "gone", Op: watch.Delete},
		{Path: ".", Op: watch.Mkdir, Mode: fs.ModeDir | 0o755},
		{Path: "bin/run", Op: watch.Write, Mode: 0o755 | fs.ModeSetuid | fs.ModeSticky, Data: []byte("#!/bin/sh\n")},
		{Path: "link", Op: watch.Write, Mode: fs.ModeSymlink | 0o777, Link: "bin/run"},
	})
	if target != "/app" {
		t.Errorf("target %q", target)
	}
	content := func(e agent.SyncEntry) string {
		r, err := e.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(r)
		return string(b)
	}
	if c := content(got[2]); c != "#!/bin/sh\n" || got[2].Size != int64(len(c)) {
		t.Errorf("file content %q, size %d", c, got[2].Size)
	}
	for i := range got {
		got[i].Open = nil
	}
	want := []agent.SyncEntry{
		{Op: agent.SyncDelete, Path: "gone"},
		{Op: agent.SyncDir, Path: ".", Mode: 0o755},
		{Op: agent.SyncFile, Path: "bin/run", Mode: 0o5755, Size: 10},
		{Op: agent.SyncSymlink, Path: "link", Link: "bin/run"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("entries\n got %+v\nwant %+v", got, want)
	}

	target, got = syncEntries("/etc/app/app.conf", true, []watch.Entry{{Path: ".", Op: watch.Write, Mode: 0o600 | fs.ModeSetgid, Data: []byte("x")}})
	if target != "/etc/app" || len(got) != 1 || got[0].Path != "app.conf" || got[0].Mode != 0o2600 {
		t.Errorf("single-file rule: %q %+v", target, got)
	}
	_, got = syncEntries("/etc/app/app.conf", true, []watch.Entry{{Path: ".", Op: watch.Delete}})
	if got[0].Op != agent.SyncDelete || got[0].Path != "app.conf" {
		t.Errorf("single-file rule, deleted: %+v", got)
	}
}

// TestEventString: the line a batch prints names the service, the action,
// the count, the target and the time, or why it did nothing.
func TestEventString(t *testing.T) {
	for _, tc := range []struct {
		e    Event
		want string
	}{
		{Event{Service: "web", Action: "sync", Entries: 3, Target: "/app", Replicas: 1, Millis: 12}, "web: sync 3 files to /app in 12ms"},
		{Event{Service: "web", Action: "sync", Initial: true, Entries: 1, Target: "/app", Replicas: 2, Millis: 5}, "web: sync (initial sync) 1 file to /app in 5ms (2 replicas)"},
		{Event{Service: "web", Action: "restart", Entries: 2, Replicas: 1, Millis: 1100}, "web: restart in 1100ms"},
		{Event{Service: "web", Action: "sync+restart", Entries: 2, Target: "/app"}, "web: sync+restart 2 files to /app: skipped, the service is not running"},
		{Event{Service: "web", Action: "sync", Entries: 2, Target: "/app", Replicas: 1, Error: "web-1: guest unreachable"}, "web: sync 2 files to /app: web-1: guest unreachable"},
		{Event{Service: "web", Action: "sync", Entries: 2, Target: "/app", Replicas: 1, Millis: 3,
			Skipped: []agent.SyncSkip{{Path: "ro/x", Reason: "read-only file system"}}}, "web: sync 2 files to /app in 3ms; ro/x not applied: read-only file system"},
	} {
		if got := tc.e.String(); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
		if strings.Contains(tc.e.String(), "\n") {
			t.Errorf("%q spans lines", tc.e.String())
		}
	}
}
