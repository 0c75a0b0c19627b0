package project_test

import (
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
