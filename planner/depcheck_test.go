package planner_test

import (
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestPlannerDoesNoIO keeps the planner pure: neither it nor any package of
// this module that it imports may import a package that does I/O.
func TestPlannerDoesNoIO(t *testing.T) {
	forbidden := []string{"os", "os/exec", "os/signal", "net", "net/http", "io/fs", "io/ioutil", "syscall", "path/filepath"}
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "github.com/vmcompose/vmcompose/planner").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg, imports := fields[0], fields[1:]
		if !strings.HasPrefix(pkg, "github.com/vmcompose/vmcompose/") {
			continue
		}
		checked++
		for _, imp := range imports {
			if slices.Contains(forbidden, imp) {
				t.Errorf("%s imports %s: the planner and what it imports of this module must do no I/O", pkg, imp)
			}
		}
	}
	if checked == 0 {
		t.Fatal("go list reported no package of this module: the check checked nothing")
	}
}
