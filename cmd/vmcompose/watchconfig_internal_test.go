package main

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

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
