package watch

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
)

// TestDebounce drives the debouncer with its own clock: a batch goes
// after Quiet without events, each event pushes it back, Cap after the
// first event it goes however busy the path stays, and after Burst events
// the quiet period is BurstQuiet.
func TestDebounce(t *testing.T) {
	timing := Timing{Quiet: 25 * time.Millisecond, Cap: 200 * time.Millisecond}
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	var g gather
	if _, ok := g.due(timing); ok {
		t.Fatal("an empty gather is due")
	}
	g.add("a", true, false, at(0))
	if due, _ := g.due(timing); !due.Equal(at(25)) {
		t.Fatalf("due %v after one event, want +25ms", due.Sub(t0))
	}
	g.add("b", true, false, at(20))
	if due, _ := g.due(timing); !due.Equal(at(45)) {
		t.Fatalf("due %v after a second event, want +45ms (quiet from the last)", due.Sub(t0))
	}
	for ms := 40; ms < 400; ms += 10 { // busy: an event every 10 ms
		g.add("c", false, false, at(ms))
	}
	if due, _ := g.due(timing); !due.Equal(at(200)) {
		t.Fatalf("due %v while busy, want the cap, +200ms", due.Sub(t0))
	}
	if due, _ := g.due(Timing{Quiet: 25 * time.Millisecond, BurstQuiet: 100 * time.Millisecond, Burst: 30, Cap: time.Second}); !due.Equal(at(490)) {
		t.Fatalf("due %v after 38 events, want the burst's quiet period after the last: +490ms", due.Sub(t0))
	}
	if got := g.take(); len(got) != 3 || !got["a"].created || got["c"].created {
		t.Fatalf("took %v", got)
	}
	if _, ok := g.due(timing); ok {
		t.Fatal("due after take")
	}
	g.add("d", false, false, at(500))
	if due, _ := g.due(timing); !due.Equal(at(525)) {
		t.Fatalf("due %v after take, want a fresh start at +525ms", due.Sub(t0))
	}
}

// TestSettle: the batch says each path's final state, whatever the
// events were: made then removed in one batch is nothing, written then
// removed is a delete, removed then made again a write (and a delete
// first for a directory).
func TestSettle(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "back"), "again")
	check(t, os.Mkdir(filepath.Join(dir, "d"), 0o750))
	var g gather
	now := time.Now()
	g.add("tmp", true, false, now)     // created and gone: the guest never had it
	g.add("tmp", false, true, now)     //
	g.add("edited", false, false, now) // written, then removed
	g.add("edited", false, true, now)  //
	g.add("back", false, true, now)    // removed, then made again
	g.add("back", true, false, now)    //
	g.add("d", false, true, now)       // a directory removed and made again
	g.add("d", true, false, now)       //
	g.add("gone/x", false, true, now)  // inside a removed directory
	g.add("gone", false, true, now)    //
	entries, unread := settle(dir, false, g.take())
	if len(unread) > 0 {
		t.Fatal(unread)
	}
	got := show(Batch{Entries: entries})
	want := "delete d\ndelete edited\ndelete gone\nwrite back 0644 \"again\"\nmkdir d 0750"
	if got != want {
		t.Fatalf("settled:\n%s\nwant:\n%s", got, want)
	}
}

func TestBindSkips(t *testing.T) {
	bind := func(src, target string) types.ServiceVolumeConfig {
		return types.ServiceVolumeConfig{Type: types.VolumeTypeBind, Source: src, Target: target}
	}
	r := Rule{Service: "web", Path: "/p/src", Target: "/app/src", Action: types.WatchActionSync}
	tests := []struct {
		name string
		vols []types.ServiceVolumeConfig
		all  bool
		skip []string
	}{
		{"the path bound where it syncs", []types.ServiceVolumeConfig{bind("/p/src", "/app/src")}, true, nil},
		{"a parent bound so it lands there", []types.ServiceVolumeConfig{bind("/p", "/app")}, true, nil},
		{"bound elsewhere: still synced", []types.ServiceVolumeConfig{bind("/p/src", "/mnt")}, false, nil},
		{"a sub-path bound where it syncs", []types.ServiceVolumeConfig{bind("/p/src/static", "/app/src/static"), bind("/p/src/x", "/x")}, false, []string{"/p/src/static"}},
		{"a volume, not a bind", []types.ServiceVolumeConfig{{Type: types.VolumeTypeVolume, Source: "data", Target: "/app/src"}}, false, nil},
	}
	for _, tt := range tests {
		all, skip := BindSkips(tt.vols, r)
		if all != tt.all || len(skip) != len(tt.skip) || (len(skip) > 0 && skip[0] != tt.skip[0]) {
			t.Errorf("%s: BindSkips = %v, %q; want %v, %q", tt.name, all, skip, tt.all, tt.skip)
		}
	}
	restart := r
	restart.Target, restart.Action = "", types.WatchActionRestart
	if all, _ := BindSkips([]types.ServiceVolumeConfig{bind("/p", "/app")}, restart); all {
		t.Error("a restart rule (nothing synced) is skipped for a bind mount")
	}
}

// TestIgnoreFile: the build context's <Dockerfile>.dockerignore, then its
// .dockerignore; without build:, the watched directory's.
func TestIgnoreFile(t *testing.T) {
	ctx := t.TempDir()
	write(t, filepath.Join(ctx, ".dockerignore"), "x")
	build := &types.BuildConfig{Context: ctx, Dockerfile: "Dockerfile.dev"}
	if got := IgnoreFile(build, filepath.Join(ctx, "src")); got != filepath.Join(ctx, ".dockerignore") {
		t.Errorf("IgnoreFile = %q, want the context's .dockerignore", got)
	}
	write(t, filepath.Join(ctx, "Dockerfile.dev.dockerignore"), "y")
	if got := IgnoreFile(build, filepath.Join(ctx, "src")); got != filepath.Join(ctx, "Dockerfile.dev.dockerignore") {
		t.Errorf("IgnoreFile = %q, want the Dockerfile's", got)
	}
	write(t, filepath.Join(ctx, "src/app.py"), "")
	if got := IgnoreFile(nil, filepath.Join(ctx, "src")); got != "" {
		t.Errorf("IgnoreFile without build, no .dockerignore in the path = %q, want none", got)
	}
	if got := IgnoreFile(nil, filepath.Join(ctx, "src/app.py")); got != "" {
		t.Errorf("IgnoreFile of a file = %q, want none (its directory has none)", got)
	}
	if got := IgnoreFile(nil, ctx); got != filepath.Join(ctx, ".dockerignore") {
		t.Errorf("IgnoreFile without build = %q, want the path's", got)
	}
}

// TestRules: a service's rules carry their index, their .dockerignore and
// the sub-paths bind mounts share; a rule a bind mount shares whole is
// left out, as docker compose leaves it out.
func TestRules(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "web/.dockerignore"), "*.log")
	svc := types.ServiceConfig{Name: "web", Develop: &types.DevelopConfig{Watch: []types.Trigger{
		{Path: filepath.Join(dir, "conf"), Action: types.WatchActionSync, Target: "/etc/app"},
		{Path: filepath.Join(dir, "web"), Action: types.WatchActionSyncRestart, Target: "/srv"},
	}}}
	svc.Volumes = []types.ServiceVolumeConfig{
		{Type: types.VolumeTypeBind, Source: filepath.Join(dir, "conf"), Target: "/etc/app"},
		{Type: types.VolumeTypeBind, Source: filepath.Join(dir, "web/static"), Target: "/srv/static"},
	}
	rules := Rules(svc)
	if len(rules) != 1 {
		t.Fatalf("Rules = %+v, want the second rule only", rules)
	}
	r := rules[0]
	if r.Index != 1 || r.IgnoreFile != filepath.Join(dir, "web/.dockerignore") || len(r.Skip) != 1 || r.Skip[0] != filepath.Join(dir, "web/static") {
		t.Errorf("rule %+v: want index 1, web's .dockerignore, web/static skipped", r)
	}
	if got, want := r.String(), `service "web": develop.watch[1] (path `+filepath.Join(dir, "web")+`)`; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestInstancesError(t *testing.T) {
	n := sysctlInt("fs.inotify.max_user_instances")
	want := fmt.Sprintf("starting inotify: this user has no inotify instance left (fs.inotify.max_user_instances = %d): raise it with `sysctl fs.inotify.max_user_instances=%d` as root (a file in /etc/sysctl.d/ keeps it across boots); nothing is watched", n, max(2*n, 524288))
	if got := instancesError(fmt.Errorf("inotify_init1: %w", syscall.EMFILE)).Error(); got != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}
