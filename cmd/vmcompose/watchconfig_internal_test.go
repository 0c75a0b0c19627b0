package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/project"
)

// TestConfigFiles: watch follows the compose files, the project's .env
// (not there yet) or the --env-file files instead, and every service's
// env_file, each once.
func TestConfigFiles(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{
		"compose.yaml": `services:
  a: {image: x, env_file: [a.env, shared.env]}
  b: {image: x, env_file: [{path: shared.env}, {path: opt.env, required: false}]}
`,
		"compose.override.yaml": "services:\n  a: {environment: {X: \"1\"}}\n",
		"a.env":                 "A=1\n",
		"shared.env":            "S=1\n",
		"other.env":             "O=1\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	at := func(names ...string) []string {
		for i, n := range names {
			names[i] = filepath.Join(dir, n)
		}
		slices.Sort(names)
		return names
	}
	for _, tc := range []struct {
		envFiles []string
		want     []string
	}{
		{nil, at(".env", "a.env", "compose.override.yaml", "compose.yaml", "opt.env", "shared.env")},
		{at("other.env"), at("a.env", "compose.override.yaml", "compose.yaml", "opt.env", "other.env", "shared.env")},
	} {
		opts := project.Options{WorkingDir: dir, EnvFiles: tc.envFiles, Env: []string{}}
		p, err := project.Load(context.Background(), opts)
		if err != nil {
			t.Fatal(err)
		}
		if got := configFiles(p, opts); !slices.Equal(got, tc.want) {
			t.Errorf("--env-file %v: watching\n%q\nwant\n%q", tc.envFiles, got, tc.want)
		}
	}
}

// TestSameRules: a rule's target, a new rule and a service newly watched
// are changes of the rules; an environment is not.
func TestSameRules(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	load := func(compose string) *project.Project {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(compose), 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := project.Load(context.Background(), project.Options{WorkingDir: dir, Env: []string{}})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	const rule = "{path: ./src, action: sync, target: /app}"
	svc := func(env, rules string) string {
		return "services:\n  a:\n    image: x\n    environment: {X: " + env + "}\n    develop: {watch: [" + rules + "]}\n"
	}
	base := load(svc("1", rule))
	for _, tc := range []struct {
		what, compose string
		names         []string
		same          bool
	}{
		{"the environment", svc("2", rule), []string{"a"}, true},
		{"the target", svc("1", "{path: ./src, action: sync, target: /moved}"), []string{"a"}, false},
		{"the action", svc("1", "{path: ./src, action: sync+restart, target: /app}"), []string{"a"}, false},
		{"a new rule", svc("1", rule+", {path: ./src, action: rebuild}"), []string{"a"}, false},
		{"another service watched", svc("1", rule), []string{"a", "b"}, false},
	} {
		if got := sameRules(base, load(tc.compose), []string{"a"}, tc.names); got != tc.same {
			t.Errorf("%s changed: same rules %v, want %v", tc.what, got, tc.same)
		}
	}
}

// TestConfigEventLines: the line each kind of event prints, and its JSON.
func TestConfigEventLines(t *testing.T) {
	files := []string{"compose.yaml"}
	for _, tc := range []struct {
		e          configEvent
		line, json string
	}{
		{configEvent{Files: files, Service: "app", Action: "recreate", Changed: []string{"environment", "command"}},
			"app: compose.yaml changed: recreating (environment, command)",
			`{"config":["compose.yaml"],"service":"app","action":"recreate","changed":["environment","command"]}`},
		{configEvent{Files: files, Service: "db", Action: "stopped", Changed: []string{"image"}},
			"db: compose.yaml changed: not recreated, it is stopped (image)",
			`{"config":["compose.yaml"],"service":"db","action":"stopped","changed":["image"]}`},
		{configEvent{Files: files, Service: "new", Action: "new"},
			"new: compose.yaml changed: new service, not started: run vmcompose up",
			`{"config":["compose.yaml"],"service":"new","action":"new"}`},
		{configEvent{Files: []string{".env", "compose.yaml"}, Action: "reload"},
			".env, compose.yaml changed: no service to recreate",
			`{"config":[".env","compose.yaml"],"action":"reload"}`},
		{configEvent{Files: files, Action: "reload", Error: "compose.yaml: yaml: bad"},
			"vmcompose: compose.yaml: yaml: bad: the services keep running as they were",
			`{"config":["compose.yaml"],"action":"reload","error":"compose.yaml: yaml: bad"}`},
		{configEvent{Files: files, Service: "app", Action: "recreate", Error: "boom"},
			"vmcompose: app: compose.yaml changed: recreating: boom",
			`{"config":["compose.yaml"],"service":"app","action":"recreate","error":"boom"}`},
	} {
		if got := tc.e.String(); got != tc.line {
			t.Errorf("line %q, want %q", got, tc.line)
		}
		if b, err := json.Marshal(tc.e); err != nil || string(b) != tc.json {
			t.Errorf("JSON %s, %v; want %s", b, err, tc.json)
		}
	}
}

// TestModifiedSince: the files written after a time, not the older ones
// nor those missing.
func TestModifiedSince(t *testing.T) {
	dir := t.TempDir()
	old, edited := filepath.Join(dir, "compose.yaml"), filepath.Join(dir, ".env")
	if err := os.WriteFile(old, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(old, time.Time{}, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	since := time.Now().Add(-time.Minute)
	if err := os.WriteFile(edited, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := modifiedSince([]string{old, edited, filepath.Join(dir, "gone")}, since); !slices.Equal(got, []string{edited}) {
		t.Errorf("modified: %q, want %q", got, edited)
	}
}
