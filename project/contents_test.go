package project_test

import (
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vmcompose/vmcompose/project"
)

// TestContents: the contents of the secrets and configs the services use
// are read at load, from files, the environment and content:; what
// cannot be read is a problem of each service that uses it, naming the
// secret and the path or variable. What only a swarm has is left to the
// planner, and what no service uses is not read.
func TestContents(t *testing.T) {
	dir := tree(t, map[string]string{
		"pw.txt":   "hunter2",
		"empty":    "",
		"big":      strings.Repeat("x", project.MaxContent+1),
		"app.conf": "a=1\n",
		"compose.yaml": `
services:
  db:
    image: postgres
    secrets: [pw, token, empty]
    configs: [app, inline, fromenv]
  broken:
    image: busybox
    secrets: [missing, unset]
    configs: [big]
  swarm:
    image: busybox
    secrets: [ext]
  later:
    image: busybox
    profiles: [debug]
    secrets: [missing]
secrets:
  pw: {file: ./pw.txt}
  token: {environment: TOKEN}
  empty: {file: ./empty}
  missing: {file: ./absent.txt}
  unset: {environment: NOT_SET}
  ext: {external: true}
  unused: {file: ./also-absent}
configs:
  app: {file: ./app.conf}
  inline: {content: "b=2"}
  fromenv: {environment: CONF}
  big: {file: ./big}
`})
	p := mustLoad(t, project.Options{WorkingDir: dir, Env: []string{"TOKEN=t0k3n", "CONF=c=3"}})
	want := map[string]string{
		"secrets:pw": "hunter2", "secrets:token": "t0k3n", "secrets:empty": "",
		"configs:app": "a=1\n", "configs:inline": "b=2", "configs:fromenv": "c=3",
	}
	got := map[string]string{}
	for k, v := range p.Contents {
		got[k] = string(v)
	}
	if !maps.Equal(got, want) {
		t.Errorf("contents %q, want %q", got, want)
	}
	problems := map[string][]string{
		"broken": {
			`secrets: "missing": file ` + filepath.Join(dir, "absent.txt") + ` does not exist: create it, or point file: at an existing file`,
			`secrets: "unset": environment variable NOT_SET is not set: set it (in the environment or .env), or use file:`,
			`configs: "big": file ` + filepath.Join(dir, "big") + ` has 1048577 bytes, more than the 1048576 a secret or config may have: bind-mount it instead`,
		},
		"later": {`secrets: "missing": file ` + filepath.Join(dir, "absent.txt") + ` does not exist: create it, or point file: at an existing file`},
	}
	for _, name := range slices.Sorted(maps.Keys(p.AllServices())) {
		if !slices.Equal(p.Problems[name], problems[name]) {
			t.Errorf("service %s: problems\n%q\nwant\n%q", name, p.Problems[name], problems[name])
		}
	}
}
