package modload

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
)

// ManifestPath is where the initramfs keeps its module manifest: one
// absolute module path per line, dependencies before the modules that need
// them. Lines starting with # are comments.
const ManifestPath = "/etc/vmcompose/modules"

// Parse reads a manifest.
func Parse(r io.Reader) ([]string, error) {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if !path.IsAbs(l) {
			return nil, fmt.Errorf("module manifest: %q is not an absolute path", l)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("module manifest: %w", err)
	}
	return out, nil
}

// Read reads the manifest at path; a missing manifest lists no modules.
func Read(path string) ([]string, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("module manifest: %w", err)
	}
	defer f.Close()
	return Parse(f)
}

// Name returns a module's name from its path: "/lib/…/virtio-rng.ko" gives
// "virtio_rng".
func Name(p string) string {
	return strings.ReplaceAll(strings.TrimSuffix(path.Base(p), ".ko"), "-", "_")
}
