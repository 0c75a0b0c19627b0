package initramfs_test

import (
	"go/parser"
	"go/token"
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
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
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

// TestImports keeps the rules of the package docs: the guest imports
// modload, so it uses only the standard library and x/sys/unix; initramfs
// knows only the kernel package and modload.
func TestImports(t *testing.T) {
	for p := range imports(t, "modload") {
		if strings.Contains(strings.Split(p, "/")[0], ".") && p != "golang.org/x/sys/unix" {
			t.Errorf("modload imports %s: only the standard library and golang.org/x/sys/unix are allowed", p)
		}
	}
	for p := range imports(t, ".") {
		if strings.Contains(strings.Split(p, "/")[0], ".") &&
			p != "github.com/vmcompose/vmcompose/vm/kernel" && p != "github.com/vmcompose/vmcompose/vm/initramfs/modload" &&
			p != "github.com/vmcompose/vmcompose/internal/flock" {
			t.Errorf("initramfs imports %s: only vm/kernel, modload and internal/flock are allowed", p)
		}
	}
}
