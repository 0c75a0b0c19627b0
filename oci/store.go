package oci

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vmcompose/vmcompose/internal/atomicfile"
	"github.com/vmcompose/vmcompose/internal/flock"
)

// Annotations on the descriptors of index.json.
const (
	// AnnotationRefName holds the full reference of the image, registry
	// included ("docker.io/library/alpine:3.20"). The OCI image layout spec
	// reads it (skopeo "oci:DIR:REF", podman, umoci, crane, oras); its
	// grammar allows the ":", "/", "." and "@" a full reference has.
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationContainerdName holds the same full reference for containerd,
	// nerdctl and docker load, which read this one first and would otherwise
	// take ref.name for a bare tag.
	AnnotationContainerdName = "io.containerd.image.name"
	// AnnotationPulledAt is when the image was last pulled or imported,
	// RFC 3339 in UTC; the "daily" pull policy reads it.
	AnnotationPulledAt = "io.github.vmcompose.pulled-at"
	// AnnotationSource is the digest the reference resolved to in the
	// registry (of the index for a multi-platform image). A later pull
	// compares it with a HEAD request and skips the manifest GETs, which
	// Docker Hub counts against its rate limit, when it is unchanged.
	AnnotationSource = "io.github.vmcompose.source-digest"
)

const (
	layoutFile    = "oci-layout"
	indexFile     = "index.json"
	indexLockFile = "index.json.lock"
	gcLockFile    = "gc.lock"
	rootfsDir     = "rootfs"
	tmpPrefix     = atomicfile.TempPrefix
)

// Store is the shared, content-addressed image store: an OCI image layout
// that standard tools read, plus a rootfs/ folder for root filesystem images.
//
//	<dir>/oci-layout            {"imageLayoutVersion":"1.0.0"}
//	<dir>/index.json            one descriptor per image and platform, named by
//	                            AnnotationRefName and AnnotationContainerdName
//	<dir>/blobs/sha256/<hex>    manifests, configs, layers; each written once,
//	                            verified, fsynced and renamed into place
//	<dir>/rootfs/               root filesystem images (RootfsDir)
//	<dir>/index.json.lock       flock held while index.json is rewritten
//	<dir>/gc.lock               flock: shared while pulling or importing,
//	                            exclusive while pruning
//
// A Store is safe for concurrent use by goroutines and by several processes
// sharing the same directory.
type Store struct {
	dir string
	now func() time.Time

	mu       sync.Mutex
	inflight map[v1.Hash]chan struct{}
}

// Image is an image recorded in the store.
type Image struct {
	// Ref is the full reference, registry included, as recorded:
	// "docker.io/library/alpine:3.20", "localhost:5000/app@sha256:…".
	Ref string
	// Digest is the digest of the image manifest (for a multi-platform
	// image: of the platform's manifest, not of the index).
	Digest v1.Hash
	// ID is the digest of the config blob, what docker calls the image ID.
	ID v1.Hash
	// MediaType is the media type of the manifest (OCI or Docker v2).
	MediaType types.MediaType
	// Platform is the image's platform: its config's, completed by the
	// variant the registry's index gave it when the config lacks one.
	Platform v1.Platform
	// Size is the bytes the image takes in the store: manifest, config and
	// layers as stored (compressed), shared blobs counted in full.
	Size int64
	// PulledAt is when the image was last pulled or imported.
	PulledAt time.Time
	// Config is the image config (entrypoint, env, user, …).
	Config *v1.ConfigFile
	// V1 reads the image from the store; it never touches the network.
	V1 v1.Image

	desc v1.Descriptor // the index.json entry
}

// DefaultDir returns the store directory: $VMCOMPOSE_HOME if set, else
// $XDG_DATA_HOME/vmcompose, else ~/.local/share/vmcompose.
func DefaultDir() (string, error) {
	if d := os.Getenv("VMCOMPOSE_HOME"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_DATA_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "vmcompose"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("store directory: %w (set VMCOMPOSE_HOME)", err)
	}
	return filepath.Join(home, ".local", "share", "vmcompose"), nil
}

// Open opens the store at dir, creating the layout if it is missing. When no
// other process is pulling, importing or pruning, it removes the temporary
// files a killed process left behind.
func Open(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", dir, err)
	}
	s := &Store{dir: abs, now: time.Now, inflight: map[v1.Hash]chan struct{}{}}
	if err := s.init(); err != nil {
		return nil, fmt.Errorf("opening store %s: %w", dir, err)
	}
	if unlock, ok, err := s.tryLock(gcLockFile); err == nil && ok {
		s.removeTemps()
		unlock()
	}
	return s, nil
}

func (s *Store) init() error {
	for _, d := range []string{s.path("blobs", "sha256"), s.path(rootfsDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if _, err := os.Stat(s.path(layoutFile)); errors.Is(err, fs.ErrNotExist) {
		if err := atomicfile.WriteFile(s.path(layoutFile), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if _, err := os.Stat(s.path(indexFile)); errors.Is(err, fs.ErrNotExist) {
		return s.updateIndex(func(*v1.IndexManifest) error { return nil })
	} else if err != nil {
		return err
	}
	return nil
}

// Dir returns the store directory.
func (s *Store) Dir() string { return s.dir }

// RootfsDir returns the folder for root filesystem images. Prune removes
// files in it named "<digest>.ext4" ("sha256:<hex>.ext4", "sha256-<hex>.ext4"
// or "<hex>.ext4") whose digest is neither the manifest digest nor the config
// digest of a recorded image; it leaves every other file alone.
func (s *Store) RootfsDir() string { return s.path(rootfsDir) }

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.dir}, elem...)...)
}

// Layout returns the store as a go-containerregistry layout.Path, for reading.
func (s *Store) Layout() layout.Path { return layout.Path(s.dir) }

// readIndex reads index.json. It is replaced atomically, so no lock is needed.
func (s *Store) readIndex() (*v1.IndexManifest, error) {
	b, err := os.ReadFile(s.path(indexFile))
	if errors.Is(err, fs.ErrNotExist) {
		return emptyIndex(), nil
	}
	if err != nil {
		return nil, err
	}
	var im v1.IndexManifest
	if err := json.Unmarshal(b, &im); err != nil {
		return nil, fmt.Errorf("reading %s: %w", s.path(indexFile), err)
	}
	return &im, nil
}

func emptyIndex() *v1.IndexManifest {
	return &v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{}}
}

// updateIndex reads index.json, applies fn and writes the result atomically,
// all under an exclusive flock so concurrent writers never lose updates.
func (s *Store) updateIndex(fn func(*v1.IndexManifest) error) error {
	unlock, err := s.lock(context.Background(), indexLockFile, syscall.LOCK_EX)
	if err != nil {
		return err
	}
	defer unlock()
	im, err := s.readIndex()
	if err != nil {
		return err
	}
	if err := fn(im); err != nil {
		return err
	}
	if im.Manifests == nil {
		im.Manifests = []v1.Descriptor{}
	}
	b, err := json.MarshalIndent(im, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(s.path(indexFile), append(b, '\n'), 0o644)
}

// lock takes a flock on <dir>/<file>, waiting until ctx is done.
func (s *Store) lock(ctx context.Context, file string, how int) (func(), error) {
	return flock.Lock(ctx, s.path(file), how == syscall.LOCK_SH)
}

// tryLock takes an exclusive flock on <dir>/<file> if nobody holds it.
func (s *Store) tryLock(file string) (unlock func(), ok bool, err error) {
	return flock.TryLock(s.path(file))
}

// removeTemps deletes temporary files. The caller holds the gc lock
// exclusively, so no writer is alive to own them.
func (s *Store) removeTemps() (n int, freed int64) {
	for _, d := range []string{s.dir, s.path("blobs", "sha256")} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), tmpPrefix) {
				continue
			}
			info, err := e.Info()
			if err == nil && os.Remove(filepath.Join(d, e.Name())) == nil {
				n++
				freed += info.Size()
			}
		}
	}
	return n, freed
}

// canonical returns the full name of a reference as docker and containerd
// print it: Docker Hub as "docker.io/…", not "index.docker.io/…".
func canonical(ref name.Reference) string {
	n := ref.Name()
	if rest, ok := strings.CutPrefix(n, name.DefaultRegistry+"/"); ok {
		return "docker.io/" + rest
	}
	return n
}

// descName returns the reference recorded on an index.json descriptor.
func descName(d v1.Descriptor) string {
	if n := d.Annotations[AnnotationContainerdName]; n != "" {
		return n
	}
	return d.Annotations[AnnotationRefName]
}

func descPlatform(d v1.Descriptor) v1.Platform {
	if d.Platform != nil {
		return *d.Platform
	}
	return v1.Platform{}
}

// Images lists the images in the store, sorted by reference and platform. It
// skips index.json entries without a reference (written by other tools).
func (s *Store) Images() ([]Image, error) {
	im, err := s.readIndex()
	if err != nil {
		return nil, fmt.Errorf("listing images: %w", err)
	}
	var out []Image
	for _, d := range im.Manifests {
		if descName(d) == "" || !d.MediaType.IsImage() {
			continue
		}
		img, err := s.imageFromDescriptor(d)
		if err != nil {
			return nil, fmt.Errorf("listing images: %s: %w", descName(d), err)
		}
		out = append(out, img)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Ref != out[j].Ref {
			return out[i].Ref < out[j].Ref
		}
		return out[i].Platform.String() < out[j].Platform.String()
	})
	return out, nil
}

// Image returns the recorded image for ref and the platform (WithPlatform,
// default HostPlatform) without touching the network. ref is parsed as docker
// does ("alpine" is "docker.io/library/alpine:latest"). An image not in the
// store is an error wrapping ErrNotFound.
func (s *Store) Image(ref string, opts ...Option) (Image, error) {
	o, err := makeOptions(opts)
	if err != nil {
		return Image{}, err
	}
	r, err := parseRef(ref, o)
	if err != nil {
		return Image{}, err
	}
	img, err := s.lookup(canonical(r), o.platform)
	if err != nil {
		return Image{}, fmt.Errorf("image %s: %w", canonical(r), err)
	}
	return img, nil
}

// lookup finds the descriptor recorded for ref and platform.
func (s *Store) lookup(ref string, platform v1.Platform) (Image, error) {
	im, err := s.readIndex()
	if err != nil {
		return Image{}, err
	}
	for _, d := range im.Manifests {
		if descName(d) == ref && descPlatform(d).Satisfies(platform) {
			return s.imageFromDescriptor(d)
		}
	}
	return Image{}, terminal(ErrNotFound, nil, "not in the store for %s", platform)
}

func (s *Store) imageFromDescriptor(d v1.Descriptor) (Image, error) {
	img, err := s.Layout().Image(d.Digest)
	if err != nil {
		return Image{}, err
	}
	m, err := img.Manifest()
	if err != nil {
		return Image{}, err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return Image{}, err
	}
	size := d.Size + m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	t, _ := time.Parse(time.RFC3339, d.Annotations[AnnotationPulledAt])
	return Image{
		Ref:       descName(d),
		Digest:    d.Digest,
		ID:        m.Config.Digest,
		MediaType: d.MediaType,
		Platform:  descPlatform(d),
		Size:      size,
		PulledAt:  t,
		Config:    cfg,
		V1:        img,
		desc:      d,
	}, nil
}

// record adds (or replaces) the index.json entry for ref and platform;
// source is the digest ref resolved to in the registry, if known.
func (s *Store) record(ref string, d v1.Descriptor, source v1.Hash) error {
	d.Annotations = map[string]string{
		AnnotationRefName:        ref,
		AnnotationContainerdName: ref,
		AnnotationPulledAt:       s.now().UTC().Format(time.RFC3339),
	}
	if source.Hex != "" {
		d.Annotations[AnnotationSource] = source.String()
	}
	p := descPlatform(d)
	return s.updateIndex(func(im *v1.IndexManifest) error {
		kept := im.Manifests[:0]
		for _, old := range im.Manifests {
			if descName(old) == ref && descPlatform(old).Equals(p) {
				continue
			}
			kept = append(kept, old)
		}
		im.Manifests = append(kept, d)
		return nil
	})
}

// Remove forgets ref (every platform recorded for it). Blobs stay until
// Prune. Removing a reference that is not recorded is an error wrapping
// ErrNotFound.
func (s *Store) Remove(ref string) error {
	r, err := parseRef(ref, &options{})
	if err != nil {
		return err
	}
	n := canonical(r)
	err = s.updateIndex(func(im *v1.IndexManifest) error {
		kept := im.Manifests[:0]
		for _, d := range im.Manifests {
			if descName(d) != n {
				kept = append(kept, d)
			}
		}
		if len(kept) == len(im.Manifests) {
			return terminal(ErrNotFound, nil, "not in the store")
		}
		im.Manifests = kept
		return nil
	})
	if err != nil {
		return fmt.Errorf("removing %s: %w", n, err)
	}
	return nil
}
