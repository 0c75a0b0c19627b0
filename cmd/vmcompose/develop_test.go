package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigWarnsOfWatchRules: config prints a project whose develop.watch
// rules watch would refuse, and warns of each on stderr, naming the
// service, the rule and the fix; plan does not block the service for
// them, since up ignores develop: as docker compose's does.
func TestConfigWarnsOfWatchRules(t *testing.T) {
	dir := t.TempDir()
	compose := `
services:
  web:
    image: busybox
    develop:
      watch:
        - {path: ./src, action: sync+exec, target: /app}
        - {path: ./gone, action: restart}
`
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(compose), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "src"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := run(t, dir, "config")
	want := `warning: service "web" cannot be watched: develop.watch[0] (path ` + filepath.Join(dir, "src") + `): action: sync+exec needs exec.command: give the command to run in the VM after each sync, or use action: sync
warning: service "web" cannot be watched: develop.watch[1] (path ` + filepath.Join(dir, "gone") + `): the path does not exist: create it, or correct path: (a relative path is the project directory's)
`
	if code != 0 || !strings.Contains(out, "develop:") || stderr != want {
		t.Errorf("config: exit %d\nstderr:\n%s\nwant:\n%s", code, stderr, want)
	}
	plan, stderr, code := run(t, dir, "plan")
	if code != 0 || !strings.Contains(plan, "create  web-1") {
		t.Errorf("plan: exit %d, %s\n%s", code, stderr, plan)
	}
}
