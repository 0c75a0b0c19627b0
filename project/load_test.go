package project_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/vmcompose/vmcompose/internal/gencompose"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/project"
)

// tree writes files (path -> content) under a new temporary directory.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		writeFile(t, dir, name, content)
	}
	return dir
}

func writeFile(t testing.TB, dir, name, content string) {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestMain(m *testing.M) {
	logrus.SetOutput(io.Discard) // compose-go's warnings about unset variables
	os.Exit(m.Run())
}

func mustLoad(t *testing.T, opts project.Options) *project.Project {
	t.Helper()
	if opts.Env == nil {
		opts.Env = []string{}
	}
	p, err := project.Load(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDiscoveryInParents(t *testing.T) {
	dir := tree(t, map[string]string{
		"compose.yaml":          "services: {web: {image: nginx}}",
		"compose.override.yaml": "services: {web: {environment: {A: b}}}",
		"src/deep/file.txt":     "",
	})
	p := mustLoad(t, project.Options{WorkingDir: filepath.Join(dir, "src", "deep")})
	if p.Name != strings.ToLower(filepath.Base(dir)) {
		t.Errorf("project name %q, want the folder's name %q", p.Name, filepath.Base(dir))
	}
	if v := p.Services["web"].Environment["A"]; v == nil || *v != "b" {
		t.Errorf("the override file was not merged: environment %v", p.Services["web"].Environment)
	}
}

func TestDiscoveryOrder(t *testing.T) {
	for _, tc := range []struct{ files []string }{
		{[]string{"compose.yaml", "compose.yml", "docker-compose.yaml", "docker-compose.yml"}},
		{[]string{"compose.yml", "docker-compose.yaml"}},
		{[]string{"docker-compose.yml", "docker-compose.yaml"}}, // compose-go's order, as docker compose's
		{[]string{"docker-compose.yaml"}},
	} {
		files := map[string]string{}
		for _, f := range tc.files {
			files[f] = "services: {" + strings.NewReplacer(".", "-").Replace(f) + ": {image: x}}"
		}
		p := mustLoad(t, project.Options{WorkingDir: tree(t, files)})
		want := strings.NewReplacer(".", "-").Replace(tc.files[0])
		if names := p.ServiceNames(); !slices.Equal(names, []string{want}) {
			t.Errorf("with %v: loaded %v, want %s", tc.files, names, want)
		}
	}
}

func TestNoComposeFile(t *testing.T) {
	_, err := project.Load(context.Background(), project.Options{WorkingDir: t.TempDir(), Env: []string{}})
	if !errors.Is(err, project.ErrNoComposeFile) || !strings.Contains(err.Error(), "-f") {
		t.Fatalf("got %v", err)
	}
}

func TestFilesMergeInOrderAndComposeFile(t *testing.T) {
	dir := tree(t, map[string]string{
		"a.yaml": "services: {web: {image: a, environment: {X: a, Y: a}}}",
		"b.yaml": "services: {web: {image: b, environment: {X: b}}}",
	})
	check := func(p *project.Project, image, x string) {
		t.Helper()
		web := p.Services["web"]
		if web.Image != image || *web.Environment["X"] != x || *web.Environment["Y"] != "a" {
			t.Errorf("image %s X=%s, want %s and %s", web.Image, *web.Environment["X"], image, x)
		}
	}
	check(mustLoad(t, project.Options{Files: []string{filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")}}), "b", "b")
	a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	check(mustLoad(t, project.Options{WorkingDir: dir, Env: []string{"COMPOSE_FILE=" + a + ":" + b}}), "b", "b")
	check(mustLoad(t, project.Options{WorkingDir: dir, Env: []string{"COMPOSE_FILE=" + b + "," + a, "COMPOSE_PATH_SEPARATOR=,"}}), "a", "a")
}

func TestProjectNamePrecedence(t *testing.T) {
	dir := tree(t, map[string]string{
		"named/compose.yaml":   "name: fromfile\nservices: {web: {image: x}}",
		"unnamed/compose.yaml": "services: {web: {image: x}}",
		"dotenv/compose.yaml":  "name: fromfile\nservices: {web: {image: x}}",
		"dotenv/.env":          "COMPOSE_PROJECT_NAME=fromdotenv",
	})
	for _, tc := range []struct {
		dir, flag string
		env       []string
		want      string
	}{
		{"unnamed", "", nil, "unnamed"},
		{"named", "", nil, "fromfile"},
		{"named", "", []string{"COMPOSE_PROJECT_NAME=fromenv"}, "fromenv"},
		{"named", "fromflag", []string{"COMPOSE_PROJECT_NAME=fromenv"}, "fromflag"},
		{"dotenv", "", nil, "fromdotenv"},
	} {
		p := mustLoad(t, project.Options{WorkingDir: filepath.Join(dir, tc.dir), Name: tc.flag, Env: tc.env})
		if p.Name != tc.want {
			t.Errorf("dir %s, -p %q, env %v: name %q, want %q", tc.dir, tc.flag, tc.env, p.Name, tc.want)
		}
	}
	_, err := project.Load(context.Background(), project.Options{WorkingDir: filepath.Join(dir, "unnamed"), Name: "Bad Name", Env: []string{}})
	if err == nil {
		t.Error("an invalid project name loaded")
	}
}

func TestProfilesFromFlagAndEnv(t *testing.T) {
	dir := tree(t, map[string]string{"compose.yaml": `
services:
  web: {image: x}
  debug: {image: x, profiles: [debug]}
  db: {image: x, profiles: [dev]}
`})
	for _, tc := range []struct {
		profiles []string
		env      []string
		want     []string
	}{
		{nil, nil, []string{"web"}},
		{[]string{"debug"}, nil, []string{"debug", "web"}},
		{nil, []string{"COMPOSE_PROFILES=debug,dev"}, []string{"db", "debug", "web"}},
		{[]string{"dev"}, []string{"COMPOSE_PROFILES=debug"}, []string{"db", "web"}},
	} {
		p := mustLoad(t, project.Options{WorkingDir: dir, Profiles: tc.profiles, Env: tc.env})
		if got := p.ServiceNames(); !slices.Equal(got, tc.want) {
			t.Errorf("--profile %v, env %v: services %v, want %v", tc.profiles, tc.env, got, tc.want)
		}
	}
}

func TestEnvFilesAndInterpolation(t *testing.T) {
	dir := tree(t, map[string]string{
		"compose.yaml": `
services:
  web:
    image: "nginx:${TAG:-latest}"
    environment:
      FROM_DOTENV: ${FROM_DOTENV}
      DEFAULTED: ${UNSET:-fallback}
      ESCAPED: $$HOME
    ports: ["${PORT}:80"]
`,
		".env":      "FROM_DOTENV=dotenv\nPORT=8080\n",
		"other.env": "FROM_DOTENV=other\nTAG=1.2\nPORT=9090\n",
	})
	p := mustLoad(t, project.Options{WorkingDir: dir})
	web := p.Services["web"]
	if web.Image != "nginx:latest" || *web.Environment["FROM_DOTENV"] != "dotenv" || *web.Environment["DEFAULTED"] != "fallback" ||
		*web.Environment["ESCAPED"] != "$HOME" || web.Ports[0].Published != "8080" {
		t.Errorf(".env: image %s env %v ports %v", web.Image, web.Environment, web.Ports)
	}
	p = mustLoad(t, project.Options{WorkingDir: dir, EnvFiles: []string{filepath.Join(dir, "other.env")}})
	web = p.Services["web"]
	if web.Image != "nginx:1.2" || *web.Environment["FROM_DOTENV"] != "other" || web.Ports[0].Published != "9090" {
		t.Errorf("--env-file: image %s env %v ports %v", web.Image, web.Environment, web.Ports)
	}
	p = mustLoad(t, project.Options{WorkingDir: dir, Env: []string{"TAG=os", "FROM_DOTENV=os"}})
	if web := p.Services["web"]; web.Image != "nginx:os" || *web.Environment["FROM_DOTENV"] != "os" {
		t.Errorf("the process environment must win over .env: %s %v", web.Image, web.Environment)
	}
}

func TestRequiredVariable(t *testing.T) {
	dir := tree(t, map[string]string{"compose.yaml": "services: {web: {image: \"nginx:${TAG:?set TAG to the release}\"}}"})
	_, err := project.Load(context.Background(), project.Options{WorkingDir: dir, Env: []string{}})
	if err == nil || !strings.Contains(err.Error(), "TAG") || !strings.Contains(err.Error(), "set TAG to the release") {
		t.Fatalf("got %v", err)
	}
}

func TestIncludeExtendsAnchors(t *testing.T) {
	dir := tree(t, map[string]string{
		"compose.yaml": `
include: [lib/db.yaml]
x-common: &common
  environment: {COMMON: "1"}
services:
  web:
    <<: *common
    extends: {file: base.yaml, service: base}
    depends_on: [db]
`,
		"base.yaml":   "services: {base: {image: base, command: [serve]}}",
		"lib/db.yaml": "services: {db: {image: postgres}}",
	})
	p := mustLoad(t, project.Options{WorkingDir: dir})
	web := p.Services["web"]
	if web.Image != "base" || web.Command[0] != "serve" || *web.Environment["COMMON"] != "1" {
		t.Errorf("web: %+v", web)
	}
	if _, ok := p.Services["db"]; !ok {
		t.Errorf("the included db service is missing: %v", p.ServiceNames())
	}
}

func TestRequiredDependencyInInactiveProfile(t *testing.T) {
	dir := tree(t, map[string]string{"compose.yaml": `
services:
  web: {image: x, depends_on: [db]}
  db: {image: x, profiles: [dev, full]}
`})
	_, err := project.Load(context.Background(), project.Options{WorkingDir: dir, Env: []string{}})
	var dis *planner.DisabledDependencyError
	if !errors.As(err, &dis) {
		t.Fatalf("got %v, want a *planner.DisabledDependencyError", err)
	}
	if want := "run with --profile dev or --profile full"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

// TestBuildLoads: a build: service loads with its image: left empty, as
// docker compose leaves it (its image is named <project>-<service>), and
// what its builder would not find on the host blocks it: the context,
// the Dockerfile, a local additional context, a build secret's file or
// variable. An absolute Dockerfile outside the context is fine.
func TestBuildLoads(t *testing.T) {
	dir := tree(t, map[string]string{
		"compose.yaml": `name: shop
services:
  app: {build: ./app}
  abs: {build: {context: ./app, dockerfile: "${PWD}/other/Containerfile"}}
  inline: {build: {context: ./empty, dockerfile_inline: "FROM scratch"}}
  nodir: {build: ./missing}
  file: {build: ./app/Dockerfile}
  nofile: {build: ./empty}
  extra: {build: {context: ./app, additional_contexts: {src: ./nosrc, base: "docker-image://alpine"}, secrets: [npmrc, token]}}
secrets:
  npmrc: {file: ./npmrc}
  token: {environment: NPM_TOKEN}
`,
		"app/Dockerfile":      "FROM scratch\n",
		"other/Containerfile": "FROM scratch\n",
		"empty/.keep":         "",
	})
	p := mustLoad(t, project.Options{WorkingDir: dir, Env: []string{"PWD=" + dir}})
	if img := p.Services["app"].Image; img != "" || planner.ImageName(p.Name, p.Services["app"]) != "shop-app" {
		t.Errorf("image: %q, ImageName %q; want none, and shop-app", img, planner.ImageName(p.Name, p.Services["app"]))
	}
	want := map[string][]string{
		"nodir":  {"build.context: " + filepath.Join(dir, "missing") + " does not exist: create it, or correct the path (a relative path is the project directory's)"},
		"file":   {"build.context: " + filepath.Join(dir, "app", "Dockerfile") + " is not a directory: give the directory to build from"},
		"nofile": {"build.dockerfile: " + filepath.Join(dir, "empty", "Dockerfile") + " does not exist: create it, or set dockerfile: (relative to the context) or dockerfile_inline:"},
		"extra": {
			"build.additional_contexts.src: " + filepath.Join(dir, "nosrc") + " does not exist: create it, or correct the path (a relative path is the project directory's)",
			`build.secrets: "npmrc": file ` + filepath.Join(dir, "npmrc") + ": no such file or directory: create it, or point file: at an existing file",
			`build.secrets: "token": environment variable NPM_TOKEN is not set: set it (in the environment or .env), or use file:`,
		},
	}
	if !reflect.DeepEqual(p.Problems, want) {
		t.Errorf("problems:\n%v\nwant:\n%v", p.Problems, want)
	}
}

// TestDiamondDependenciesLoad guards against path enumeration in the cycle
// check: compose-go's own check walks every path, which for this project
// (2^100 paths) would never finish. The deadline is a hang guard, not a
// speed target.
func TestDiamondDependenciesLoad(t *testing.T) {
	yaml, err := gencompose.Generate("diamond", 300)
	if err != nil {
		t.Fatal(err)
	}
	dir := tree(t, map[string]string{"compose.yaml": yaml})
	done := make(chan error, 1)
	go func() {
		_, err := project.Load(context.Background(), project.Options{WorkingDir: dir, Env: []string{}})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("loading 300 services in diamonds did not finish in 2 minutes")
	}
}
