package oci

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
)

// fastRetry keeps retry tests quick: 3 attempts, 1 ms apart.
var fastRetry = WithRetryBackoff(remote.Backoff{Duration: time.Millisecond, Factor: 2, Steps: 3})

// hits counts registry requests by kind ("GET blob", "GET manifest", …).
type hits struct {
	mu    sync.Mutex
	kinds map[string]int
	blobs map[string]int // GET blob requests by digest
}

var blobPath = regexp.MustCompile(`/blobs/(sha256:[0-9a-f]{64})$`)

func (h *hits) count(r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	kind := "other"
	switch {
	case strings.Contains(r.URL.Path, "/manifests/"):
		kind = "manifest"
	case strings.Contains(r.URL.Path, "/blobs/"):
		kind = "blob"
		if m := blobPath.FindStringSubmatch(r.URL.Path); m != nil && r.Method == http.MethodGet {
			h.blobs[m[1]]++
		}
	}
	h.kinds[r.Method+" "+kind]++
}

func (h *hits) get(kind string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.kinds[kind]
}

func (h *hits) total() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, c := range h.kinds {
		n += c
	}
	return n
}

func (h *hits) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.kinds = map[string]int{}
	h.blobs = map[string]int{}
}

// newRegistry starts an in-process registry over real HTTP. mw, if set,
// wraps it (to inject failures); requests are counted before mw sees them.
func newRegistry(t testing.TB, mw func(http.Handler) http.Handler) (string, *hits) {
	t.Helper()
	h := &hits{}
	h.reset()
	var reg http.Handler = registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	if mw != nil {
		reg = mw(reg)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.count(r)
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), h
}

// layerOf returns a deterministic gzip layer of about size bytes.
func layerOf(t testing.TB, seed int64, size int64) v1.Layer {
	t.Helper()
	l, err := random.Layer(size, types.OCILayer, random.WithSource(rand.NewSource(seed)))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// imageOf builds an OCI image for platform ("linux/amd64") from layers.
func imageOf(t testing.TB, platform string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img, err := imageOfLayers(platform, layers)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func imageOfLayers(platform string, layers []v1.Layer) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		return nil, err
	}
	cfg.OS, cfg.Architecture, cfg.Variant = p.OS, p.Architecture, p.Variant
	cfg.Config.Cmd = []string{"/bin/sh"}
	return mutate.ConfigFile(img, cfg)
}

func push(t testing.TB, ref string, img v1.Image) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func digestOf(t testing.TB, img v1.Image) v1.Hash {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func openStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkStore validates the store as a whole with go-containerregistry: the
// layout reads, every recorded image passes validate.Image (digests, sizes,
// diff IDs), and no temporary file is left.
func checkStore(t testing.TB, s *Store) {
	t.Helper()
	p, err := layout.FromPath(s.Dir())
	if err != nil {
		t.Fatal(err)
	}
	idx, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	if err := validate.Index(idx, validate.Fast); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	checkImages(t, s)
}

// checkImages is checkStore without validate.Index, which insists that a
// descriptor's platform equal its config's, even when the source index
// gave a variant the config lacks.
func checkImages(t testing.TB, s *Store) {
	t.Helper()
	imgs, err := s.Images()
	if err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs {
		if err := validateImage(img.V1); err != nil {
			t.Errorf("%s: %v", img.Ref, err)
		}
	}
	if tmps := tempFiles(t, s); len(tmps) > 0 {
		t.Errorf("temporary files left: %v", tmps)
	}
}

// validateImage runs validate.Image, which assumes gzip layers, on images
// whose layers are all gzip, and otherwise checks every layer's digest, size
// and (decompressing zstd or reading plain tar) diff ID against the config.
func validateImage(img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	allGzip := true
	for _, l := range layers {
		mt, err := l.MediaType()
		if err != nil {
			return err
		}
		if mt != types.OCILayer && mt != types.DockerLayer {
			allGzip = false
		}
	}
	if allGzip {
		return validate.Image(img)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	m, err := img.Manifest()
	if err != nil {
		return err
	}
	if len(cfg.RootFS.DiffIDs) != len(layers) {
		return fmt.Errorf("%d diff IDs for %d layers", len(cfg.RootFS.DiffIDs), len(layers))
	}
	for i, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		h, n, err := v1.SHA256(rc)
		rc.Close()
		if err != nil {
			return err
		}
		if h != m.Layers[i].Digest || n != m.Layers[i].Size {
			return fmt.Errorf("layer %d: %s/%d, manifest says %s/%d", i, h, n, m.Layers[i].Digest, m.Layers[i].Size)
		}
		rc, err = l.Uncompressed()
		if err != nil {
			return err
		}
		h, _, err = v1.SHA256(rc)
		rc.Close()
		if err != nil {
			return err
		}
		if h != cfg.RootFS.DiffIDs[i] {
			return fmt.Errorf("layer %d: diff ID %s, config says %s", i, h, cfg.RootFS.DiffIDs[i])
		}
	}
	return nil
}

func tempFiles(t testing.TB, s *Store) []string {
	t.Helper()
	var out []string
	for _, d := range []string{s.Dir(), filepath.Join(s.Dir(), "blobs", "sha256")} {
		entries, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), tmpPrefix) {
				out = append(out, e.Name())
			}
		}
	}
	return out
}

// blobs returns the blob digests in the store.
func blobs(t testing.TB, s *Store) map[string]bool {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(s.Dir(), "blobs", "sha256"))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), tmpPrefix) {
			out["sha256:"+e.Name()] = true
		}
	}
	return out
}

func readIndexFile(t testing.TB, s *Store) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.Dir(), "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tarBytes returns a tar with one file of size pseudo-random bytes.
func tarBytes(t testing.TB, seed int64, size int) []byte {
	t.Helper()
	data := make([]byte, size)
	rand.New(rand.NewSource(seed)).Read(data)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("file-%d", seed), Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(data)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tarOpener(t testing.TB, seed int64, size int) func() (io.ReadCloser, error) {
	b := tarBytes(t, seed, size)
	return func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil }
}
