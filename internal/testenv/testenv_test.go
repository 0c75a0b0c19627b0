package testenv

import (
	"os"
	"path/filepath"
	"testing"
)

func TestCI(t *testing.T) {
	for value, want := range map[string]bool{"true": true, "1": true, "": false, "false": false, "0": false} {
		t.Setenv("CI", value)
		if got := CI(); got != want {
			t.Errorf("CI=%q: CI() = %v, want %v", value, got, want)
		}
	}
}

// TestCorpus: the corpus is found from a package directory below the
// root, and is in the checkout, with its README.
func TestCorpus(t *testing.T) {
	readme := Corpus(t, "README.md")
	if !filepath.IsAbs(readme) {
		t.Errorf("%s is not absolute", readme)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(readme), "..", "..", "go.mod")); err != nil {
		t.Errorf("%s is not in testdata/corpus at the root: %v", readme, err)
	}
}
