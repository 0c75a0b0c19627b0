package project_test

import (
	"context"
	"maps"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vmcompose/vmcompose/project"
)

// TestHostProblems: what only the host can tell is found at load, by
// service, for the planner to block: a bind mount of a unix socket (the
// docker.sock case), of a device, of a missing source that may not be
// created, and an x-vm.backend this build has not. Services that are
// fine, or disabled by a profile but fine, have none.
func TestHostProblems(t *testing.T) {
	dir := tree(t, map[string]string{
		"compose.yaml": `
services:
  ci:
    image: docker
    volumes: [./docker.sock:/var/run/docker.sock]
  devnull:
    image: busybox
    volumes: [/dev/null:/tmp/null:ro]
  strict:
    image: busybox
    volumes: [{type: bind, source: ./absent, target: /a, bind: {create_host_path: false}}]
  vz:
    image: busybox
    x-vm: {backend: vz}
  ok:
    image: busybox
    volumes: [./src:/src]
    x-vm: {backend: qemu}
  later:
    image: docker
    profiles: [debug]
    volumes: [./docker.sock:/run/docker.sock]
`})
	l, err := net.Listen("unix", filepath.Join(dir, "docker.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	p := mustLoad(t, project.Options{WorkingDir: dir})
	want := map[string]string{
		"ci":      "volumes: bind mount of " + filepath.Join(dir, "docker.sock") + " at /var/run/docker.sock: the source is a unix socket, which a VM cannot reach (virtiofs shares only directories and regular files): remove this volume, and reach the host's service over the network instead",
		"later":   "the source is a unix socket",
		"devnull": "the source is a device",
		"strict":  "bind.create_host_path is false: create it",
		"vz":      `x-vm.backend: "vz" is not supported on linux yet: set it to qemu or remove it`,
	}
	for _, name := range slices.Sorted(maps.Keys(p.AllServices())) {
		got := p.Problems[name]
		switch w, ok := want[name]; {
		case !ok && len(got) > 0:
			t.Errorf("service %s: problems %q, want none", name, got)
		case ok && (len(got) != 1 || !strings.Contains(got[0], w)):
			t.Errorf("service %s: problems %q, want one with %q", name, got, w)
		}
	}
}

// TestWatchPathProblems: a develop.watch path that does not exist is a
// watch problem of its service, named by index and absolute path; it is
// not a problem for up. A sync rule without a target fails the load, as
// in docker compose, naming the rule.
func TestWatchPathProblems(t *testing.T) {
	dir := tree(t, map[string]string{
		"src/main.go": "package main",
		"compose.yaml": `
services:
  web:
    image: app
    develop:
      watch:
        - {path: ./src, action: sync, target: /app}
        - {path: ./missing, action: restart}
  other: {image: app}
`})
	p := mustLoad(t, project.Options{WorkingDir: dir})
	want := []string{"develop.watch[1] (path " + filepath.Join(dir, "missing") + "): the path does not exist: create it, or correct path: (a relative path is the project directory's)"}
	if got := p.WatchProblems; len(got) != 1 || !slices.Equal(got["web"], want) {
		t.Errorf("WatchProblems = %q, want web: %q", got, want)
	}
	if len(p.Problems) > 0 {
		t.Errorf("a watch path blocks up: %q", p.Problems)
	}

	writeFile(t, dir, "compose.yaml", "services:\n  web:\n    image: app\n    develop: {watch: [{path: ./src, action: sync}]}\n")
	_, err := project.Load(context.Background(), project.Options{WorkingDir: dir, Env: []string{}})
	if err == nil || !strings.Contains(err.Error(), "services.web.develop.watch[0] (path "+filepath.Join(dir, "src")+"): action: sync needs a target: set target: to the directory in the VM the files go to, e.g. /app") {
		t.Errorf("a sync rule without target: %v", err)
	}
}
