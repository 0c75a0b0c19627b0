package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// CI reports whether the tests run in CI: the variable CI is true (or 1),
// as .ci/run sets it. There everything a test needs is installed, so a
// missing piece is a failure.
func CI() bool {
	ci, _ := strconv.ParseBool(os.Getenv("CI"))
	return ci
}

// Missing ends a test that lacks something the machine should have: it
// skips the test, or fails it in CI.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if CI() {
		t.Fatalf(format+" (CI is set, so this fails instead of skipping)", args...)
	}
	t.Skipf(format, args...)
}

// LookPath returns the path of the program name, or ends the test with
// Missing and the hint (what installs it).
func LookPath(t testing.TB, name, hint string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s is not installed (%s)", name, hint)
	}
	return path
}

// Corpus returns the absolute path of parts inside testdata/corpus at the
// root of the repository: compose files nobody here wrote (its README says
// where each came from).
func Corpus(t testing.TB, parts ...string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for !fileExists(filepath.Join(dir, "go.mod")) {
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory: the corpus is in testdata/corpus at the repository's root")
		}
		dir = parent
	}
	path := filepath.Join(append([]string{dir, "testdata", "corpus"}, parts...)...)
	if !fileExists(path) {
		t.Fatalf("%s is missing from the checkout", path)
	}
	return path
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
