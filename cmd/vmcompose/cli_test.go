package main_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/vmcompose/vmcompose/internal/testenv"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/reconcile"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "vmcompose-cli")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "vmcompose")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		panic("building vmcompose: " + err.Error() + "\n" + string(out))
	}
	// vmcompose finds vminit beside itself, as make build lays them out.
	vminit := exec.Command("go", "build", "-ldflags=-s -w", "-o", filepath.Join(dir, "vminit"), "../vminit")
	vminit.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := vminit.CombinedOutput(); err != nil {
		panic("building vminit: " + err.Error() + "\n" + string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// vmcompose prepares the CLI built by TestMain to run in dir, with env
// added to the test's environment and the COMPOSE_* variables of whoever
// runs the tests cleared. Every test runs the CLI through it.
func vmcompose(dir string, env []string, args ...string) *exec.Cmd {
	c := exec.Command(binary, args...)
	c.Dir = dir
	c.Env = append(os.Environ(), "COMPOSE_FILE=", "COMPOSE_PROJECT_NAME=", "COMPOSE_PROFILES=")
	c.Env = append(c.Env, env...)
	return c
}

// output runs c and returns what it printed and its exit code.
func output(t testing.TB, c *exec.Cmd) (stdout, stderr string, code int) {
	t.Helper()
	var o, e bytes.Buffer
	c.Stdout, c.Stderr = &o, &e
	err := c.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

// run runs vmcompose in dir with an empty store and state dir of its own.
func run(t *testing.T, dir string, args ...string) (string, string, int) {
	t.Helper()
	home := t.TempDir()
	return output(t, vmcompose(dir, []string{"VMCOMPOSE_HOME=" + home, "XDG_STATE_HOME=" + filepath.Join(home, "state")}, args...))
}

// TestAwesomeCompose loads and plans every awesome-compose example
// in-process, as config and plan do: the project config renders loads back
// to the same config hashes, up plans one operation per service, and down
// with nothing recorded plans none. (project's TestLoadCorpus checks the
// waves.) One example goes through the CLI, whose plan must be the one
// planned here.
func TestAwesomeCompose(t *testing.T) {
	root := testenv.Corpus(t, "awesome-compose")
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	env := []string{"HOME=" + os.Getenv("HOME")}
	plans := map[string]*planner.Plan{}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(root, e.Name())
		t.Run(e.Name(), func(t *testing.T) {
			p, err := project.Load(t.Context(), project.Options{WorkingDir: dir, Env: env})
			if err != nil {
				t.Fatal(err)
			}
			yaml, err := p.MarshalYAML()
			if err != nil {
				t.Fatalf("rendering: %v", err)
			}
			rendered := filepath.Join(t.TempDir(), "compose.yaml")
			if err := os.WriteFile(rendered, yaml, 0o644); err != nil {
				t.Fatal(err)
			}
			again, err := project.Load(t.Context(), project.Options{Files: []string{rendered}, ProjectDir: dir, Env: env})
			if err != nil {
				t.Fatalf("loading the rendered project: %v\n%s", err, yaml)
			}
			if h, h2 := configHashes(t, p), configHashes(t, again); h != h2 {
				t.Errorf("the rendered project does not load back to the same hashes:\n%s\nvs\n%s", h, h2)
			}

			desired := planner.Desired{Project: p.Project}
			up, err := planner.Up(desired, planner.Observed{}, planner.Options{})
			if err != nil {
				t.Fatal(err)
			}
			plans[e.Name()] = up
			instances := map[string]bool{}
			for _, op := range up.Ops {
				instances[op.Instance] = true
			}
			for _, svc := range p.ServiceNames() {
				if !instances[svc+"-1"] {
					t.Errorf("the plan has no operation on %s-1:\n%s", svc, up)
				}
			}
			if len(up.Ops) != len(p.Services) {
				t.Errorf("%d operations for %d services:\n%s", len(up.Ops), len(p.Services), up)
			}
			down, err := planner.Down(desired, planner.Observed{}, planner.DownOptions{RemoveOrphans: true})
			if err != nil || len(down.Ops) != 0 {
				t.Errorf("down with nothing recorded: %v\n%s", err, down)
			}
		})
	}
	if len(plans) != 39 {
		t.Errorf("%d awesome-compose examples planned, want 39", len(plans))
	}

	// The wiring: the CLI plans the same, waves, hashes and all (the
	// hashes of its secrets' contents with the key of its store, and what
	// only the host can tell: the corpus has no build contexts).
	const example = "react-java-mysql"
	if plans[example] == nil {
		t.Fatalf("%s was not planned", example)
	}
	home := t.TempDir()
	p, err := project.Load(t.Context(), project.Options{WorkingDir: filepath.Join(root, example), Env: env})
	if err != nil {
		t.Fatal(err)
	}
	contents, err := reconcile.StoreContentDigests(p, home)
	if err != nil || len(contents) == 0 {
		t.Fatalf("the contents of %s: %v %v", example, contents, err)
	}
	want, err := planner.Up(planner.Desired{Project: p.Project, Contents: contents, Problems: p.Problems}, planner.Observed{}, planner.Options{})
	if err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := output(t, vmcompose(filepath.Join(root, example), []string{"VMCOMPOSE_HOME=" + home, "XDG_STATE_HOME=" + filepath.Join(home, "state")}, "plan", "--format", "json"))
	var got planner.Plan
	if err := json.Unmarshal([]byte(stdout), &got); code != 0 || err != nil {
		t.Fatalf("plan --format json in %s: exit %d, %v\n%s%s", example, code, err, stdout, stderr)
	}
	if !reflect.DeepEqual(&got, want) {
		t.Errorf("the CLI's plan of %s:\n%s\nwant:\n%s", example, &got, want)
	}
}

// configHashes lists the config hash of each service of p, as config
// --hash '*' prints them.
func configHashes(t *testing.T, p *project.Project) string {
	t.Helper()
	var b strings.Builder
	for _, name := range p.ServiceNames() {
		f, err := planner.ServiceFields(p.Services[name], "")
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		fmt.Fprintf(&b, "%s %s\n", name, f.Hash())
	}
	return b.String()
}

func TestCycleIsAClearError(t *testing.T) {
	dir := testenv.Corpus(t, "compose-go-fixtures", "loader", "testdata")
	stdout, stderr, code := run(t, dir, "-f", "compose-depends-on-cycle.yaml", "plan")
	if code == 0 || stdout != "" {
		t.Fatalf("exit %d, stdout %q", code, stdout)
	}
	want := "vmcompose: compose-depends-on-cycle.yaml: dependency cycle detected: service1 -> service2 -> service3 -> service1: remove one of"
	if !strings.HasPrefix(stderr, want) || strings.Count(stderr, "\n") != 1 {
		t.Errorf("stderr %q, want one line starting %q", stderr, want)
	}
}

func TestErrorsAreOneLine(t *testing.T) {
	dir := testenv.Corpus(t, "compose-go-fixtures", "schema")
	_, stderr, code := run(t, dir, "-f", "using-variables.yaml", "config")
	lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
	if code == 0 || !strings.HasPrefix(lines[len(lines)-1], "vmcompose: using-variables.yaml: error while interpolating") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
	// compose-go warns once per use of an unset variable; we say it once.
	if len(lines) != 2 || lines[0] != `warning: The "VARIABLE" variable is not set. Defaulting to a blank string.` {
		t.Errorf("warnings: %q", lines[:len(lines)-1])
	}
	_, stderr, code = run(t, t.TempDir(), "plan")
	if code == 0 || !strings.Contains(stderr, "no compose file found") {
		t.Errorf("no compose file: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = run(t, dir, "plan", "--format", "xml")
	if code == 0 || !strings.Contains(stderr, `--format: "xml" is not a format`) {
		t.Errorf("bad format: exit %d, stderr %q", code, stderr)
	}
}

// TestPlanReadsRecordedState: plan checks the record against the VMs that
// exist: a recorded instance without a VM is gone, and none of these VMs
// runs.
func TestPlanReadsRecordedState(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte("name: demo\nservices: {web: {image: nginx}, db: {image: postgres}}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	hashes, _, _ := run(t, dir, "config", "--hash", "db")
	hash := strings.Fields(hashes)[1]

	state := t.TempDir()
	os.MkdirAll(filepath.Join(state, "vmcompose", "demo"), 0o755)
	rec := `{"project":"demo","instances":[{"service":"db","number":1,"state":"running","hash":"` + hash + `","vm":"db-1"},` +
		`{"service":"old","number":1,"state":"running","hash":"x","vm":"old-1"},{"service":"web","number":1,"state":"running","hash":"x","vm":"web-1"}]}`
	for _, name := range []string{"db-1", "old-1"} {
		vmDir := filepath.Join(state, "vmcompose", "demo", "vms", name)
		os.MkdirAll(vmDir, 0o755)
		if err := os.WriteFile(filepath.Join(vmDir, "spec.json"), []byte(`{"name":"`+name+`","kernel":"/k"}`), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(state, "vmcompose", "demo", "state.json"), []byte(rec), 0o644); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := output(t, vmcompose(dir, []string{"XDG_STATE_HOME=" + state}, "plan", "--remove-orphans"))
	if code != 0 {
		t.Fatalf("plan: exit %d: %s", code, stderr)
	}
	want := `project demo (up): 3 operations in 1 wave: 1 create, 1 start, 1 remove
wave 1
  1  start   db-1   stopped
  2  remove  old-1  orphan: the service is no longer in the compose file
  3  create  web-1  new service
`
	if out != want {
		t.Errorf("plan:\n%s\nwant:\n%s", out, want)
	}
}

func TestVersion(t *testing.T) {
	out, _, code := run(t, ".", "version")
	if code != 0 || !strings.HasPrefix(out, "vmcompose version ") {
		t.Errorf("exit %d: %q", code, out)
	}
}

// TestRunFlagErrors: run refuses what it cannot do, before it boots
// anything, and says what to do instead.
func TestRunFlagErrors(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte("services:\n  svc:\n    image: busybox\n    pull_policy: never\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "-d", "svc"}, "run --detach is not supported yet"},
		{[]string{"run", "--service-ports", "-p", "8080:80", "svc"}, "--service-ports and --publish cannot be used together"},
		{[]string{"run", "-p", "80:eighty", "svc"}, `run --publish "80:eighty"`},
		{[]string{"run", "nosuch"}, "no such service: nosuch"},
		{[]string{"run", "--name", "svc-1", "svc"}, "run --name svc-1: that is the name of an instance of service svc"},
	} {
		_, stderr, code := run(t, dir, tc.args...)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want 1 and %q", tc.args, code, stderr, tc.want)
		}
	}
}
