package oci

import (
	"context"
	"fmt"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Put writes an image made on this host (not pulled, not imported from an
// archive) into the store and records it under ref, as a pull would.
// Honours WithProgress and WithLogger. Errors read "storing REF: …".
func (s *Store) Put(ctx context.Context, ref string, img v1.Image, opts ...Option) (Image, error) {
	o, err := makeOptions(opts)
	if err != nil {
		return Image{}, fmt.Errorf("storing %s: %w", ref, err)
	}
	r, err := parseRef(ref, o)
	if err != nil {
		return Image{}, fmt.Errorf("storing %s: %w", ref, err)
	}
	unlock, err := s.lock(ctx, gcLockFile, syscall.LOCK_SH)
	if err != nil {
		return Image{}, fmt.Errorf("storing %s: %w", ref, err)
	}
	defer unlock()
	n := canonical(r)
	res, err := s.store(ctx, storeInput{img: img, name: n}, o, &reporter{sink: o.progress, ref: n})
	if err != nil {
		return Image{}, fmt.Errorf("storing %s: %w", n, err)
	}
	return res, nil
}

// ImageFromRootfs is a linux/amd64 image of one layer, the root file
// system tar at path (as mmdebstrap writes it), with cfg as its process
// config: how an image is made from Debian's packages rather than pulled.
func ImageFromRootfs(path string, cfg v1.Config) (v1.Image, error) {
	layer, err := tarball.LayerFromFile(path, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("root file system %s: %w", path, err)
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return nil, fmt.Errorf("root file system %s: %w", path, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Config = "linux", "amd64", cfg
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	return mutate.ConfigMediaType(img, types.OCIConfigJSON), nil
}
