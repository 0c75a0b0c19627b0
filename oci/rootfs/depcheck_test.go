package rootfs

import (
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// imports returns the imports of the non-test Go files in dir.
func imports(t *testing.T, dir string) map[string]bool {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			out[p] = true
		}
	}
	return out
}

// TestImports keeps the rules of the package docs: ext4 uses only the
// standard library, rootfs knows nothing of VMs, compose or the CLI.
func TestImports(t *testing.T) {
	for p := range imports(t, "internal/ext4") {
		if strings.Contains(strings.Split(p, "/")[0], ".") {
			t.Errorf("internal/ext4 imports %s: only the standard library is allowed", p)
		}
	}
	for p := range imports(t, ".") {
		if strings.HasPrefix(p, "github.com/vmcompose/vmcompose/") && p != "github.com/vmcompose/vmcompose/oci/rootfs/internal/ext4" && p != "github.com/vmcompose/vmcompose/internal/flock" {
			t.Errorf("rootfs imports %s: only its own internal/ext4 and internal/flock are allowed", p)
		}
	}
}
