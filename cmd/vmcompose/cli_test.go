package main_test

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmcompose/vmcompose/internal/testenv"
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

// run runs vmcompose in dir with a clean state dir and returns stdout,
// stderr and the exit code.
func run(t *testing.T, dir string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "XDG_STATE_HOME="+t.TempDir(), "COMPOSE_FILE=", "COMPOSE_PROJECT_NAME=", "COMPOSE_PROFILES=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// TestAwesomeCompose runs config and plan in every awesome-compose example
// and checks that config's output is a project that loads back to the same
// config hashes, and that plan covers every service.
func TestAwesomeCompose(t *testing.T) {
	root := testenv.Corpus(t, "awesome-compose")
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		n++
		dir := filepath.Join(root, e.Name())
		t.Run(e.Name(), func(t *testing.T) {
			yaml, stderr, code := run(t, dir, "config")
			if code != 0 {
				t.Fatalf("config exited %d: %s", code, stderr)
			}
			hashes, _, code := run(t, dir, "config", "--hash", "*")
			if code != 0 {
				t.Fatalf("config --hash exited %d", code)
			}
			rendered := filepath.Join(t.TempDir(), "compose.yaml")
			if err := os.WriteFile(rendered, []byte(yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			again, stderr, code := run(t, dir, "-f", rendered, "--project-directory", dir, "config", "--hash", "*")
			if code != 0 || again != hashes {
				t.Errorf("config output does not load back to the same hashes (exit %d, %s):\n%s\nvs\n%s", code, stderr, hashes, again)
			}

			services, _, _ := run(t, dir, "config", "--services")
			plan, stderr, code := run(t, dir, "plan")
			if code != 0 {
				t.Fatalf("plan exited %d: %s", code, stderr)
			}
			for _, svc := range strings.Fields(services) {
				if !strings.Contains(plan, " "+svc+"-1 ") {
					t.Errorf("plan does not mention %s-1:\n%s", svc, plan)
				}
			}
			js, _, code := run(t, dir, "plan", "--format", "json")
			var parsed struct {
				Project    string
				Operations []struct{ Kind, Instance string }
			}
			if code != 0 || json.Unmarshal([]byte(js), &parsed) != nil || len(parsed.Operations) != len(strings.Fields(services)) {
				t.Errorf("plan --format json (exit %d):\n%s", code, js)
			}
			down, _, code := run(t, dir, "plan", "--down")
			if code != 0 || !strings.Contains(down, "(down): nothing to do") {
				t.Errorf("plan --down with nothing recorded (exit %d):\n%s", code, down)
			}
		})
	}
	if n != 39 {
		t.Errorf("%d awesome-compose examples, want 39", n)
	}
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
	cmd := exec.Command(binary, "plan", "--remove-orphans")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "XDG_STATE_HOME="+state)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := `project demo (up): 3 operations in 1 wave: 1 create, 1 start, 1 remove
wave 1
  1  start   db-1   stopped
  2  remove  old-1  orphan: the service is no longer in the compose file
  3  create  web-1  new service
`
	if string(out) != want {
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
