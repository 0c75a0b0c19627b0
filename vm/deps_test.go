package vm_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestImports keeps vm and its backends free of compose: they must not
// depend on the project, planner, reconcile or oci packages, nor on
// compose-go.
func TestImports(t *testing.T) {
	for _, pkg := range []string{".", "./qemu"} {
		out, err := exec.Command("go", "list", "-deps", pkg).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		for dep := range strings.Lines(string(out)) {
			dep = strings.TrimSpace(dep)
			for _, banned := range []string{
				"github.com/vmcompose/vmcompose/project",
				"github.com/vmcompose/vmcompose/planner",
				"github.com/vmcompose/vmcompose/reconcile",
				"github.com/vmcompose/vmcompose/oci",
				"github.com/compose-spec/",
			} {
				if strings.HasPrefix(dep, banned) {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
