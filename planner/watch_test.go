package planner_test

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/planner"
)

// TestWatchProblemsGolden: each develop.watch rule watch could not follow
// is named by service, index and path, with the fix; good rules and
// services without develop: have none, and none of it blocks up.
func TestWatchProblemsGolden(t *testing.T) {
	p := load(t, `
services:
  ok:
    image: app
    develop:
      watch:
        - {path: ./src, action: sync, target: /app/src, ignore: [node_modules/]}
        - {path: ./conf, action: restart}
        - {path: ./src, action: sync+exec, target: /app, exec: {command: [kill, -HUP, "1"]}}
  none: {image: app}
  bad:
    image: app
    secrets: [pw, {source: key, target: /etc/key}]
    develop:
      watch:
        - {path: ./a, action: sync}
        - {path: ./b, action: sync+restart, target: app}
        - {path: ./c, action: sync+exec, target: /app}
        - {path: ./d, action: sync, target: /run/secrets/}
        - {path: ./e, action: sync, target: /etc/key}
        - {path: ./f, action: sync, target: /run}
secrets:
  pw: {environment: PW}
  key: {environment: KEY}
`)
	got := map[string]string{}
	for name, svc := range p.Services {
		if msgs := planner.WatchProblems(svc); len(msgs) > 0 {
			got[name] = strings.Join(msgs, "\n")
		}
	}
	want := `develop.watch[0] (path /demo/a): action: sync needs a target: set target: to the directory in the VM the files go to, e.g. /app
develop.watch[1] (path /demo/b): target: "app" is not an absolute path: write where the files go in the VM from /, e.g. /app
develop.watch[2] (path /demo/c): action: sync+exec needs exec.command: give the command to run in the VM after each sync, or use action: sync
develop.watch[3] (path /demo/d): target: "/run/secrets/" is at or under /run/secrets, where the service's secrets are (read-only): sync to another directory
develop.watch[4] (path /demo/e): target: "/etc/key" is at or under /etc/key, where the service's secrets are (read-only): sync to another directory`
	if len(got) != 1 || got["bad"] != want {
		t.Fatalf("watch problems of %v:\n%s\nwant for bad only:\n%s", slices.Sorted(maps.Keys(got)), got["bad"], want)
	}
	problems, _ := planner.Problems(planner.Desired{Project: p})
	if len(problems) > 0 {
		t.Errorf("watch rules block up: %v", problems)
	}
}

// TestWatchActions: an action that is none is refused, not dropped;
// rebuild is not, with build: or without.
func TestWatchActions(t *testing.T) {
	svc := types.ServiceConfig{Name: "web", Develop: &types.DevelopConfig{Watch: []types.Trigger{
		{Path: "/p/src", Action: "copy", Target: "/app"},
		{Path: "/p/Dockerfile", Action: types.WatchActionRebuild},
	}}}
	if got := planner.WatchProblems(svc); len(got) != 1 {
		t.Errorf("image-only service: %q, want the copy refused alone", got)
	}
	svc.Build = &types.BuildConfig{Context: "/p"}
	got := strings.Join(planner.WatchProblems(svc), "\n")
	want := `develop.watch[0] (path /p/src): action: "copy" is not a watch action: use sync, sync+restart, sync+exec, restart or rebuild`
	if got != want {
		t.Fatalf("got:\n%s\nwant:\n%s", got, want)
	}
}
