package oci

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vmcompose/vmcompose/internal/atomicfile"
)

// PruneReport says what Prune removed.
type PruneReport struct {
	// Blobs is the number of blobs removed.
	Blobs int `json:"blobs"`
	// Rootfs lists the root filesystem images removed (file names).
	Rootfs []string `json:"rootfs,omitempty"`
	// TempFiles is the number of leftover temporary files removed.
	TempFiles int `json:"tempFiles"`
	// Bytes is the disk space freed.
	Bytes int64 `json:"bytes"`
	// KeptInUse lists the root filesystem images kept because a VM uses
	// them (PruneKeep), though no recorded image has them.
	KeptInUse []string `json:"keptInUse,omitempty"`
}

// PruneKeep has Prune keep the root filesystem images at these paths
// (cleaned, absolute): those a VM, running or stopped, boots from.
func PruneKeep(paths map[string]bool) PruneOption {
	return func(o *pruneOptions) { o.keep = paths }
}

// PruneOption changes what Prune keeps.
type PruneOption func(*pruneOptions)

type pruneOptions struct {
	keep map[string]bool
}

// Prune removes the blobs that no image recorded in index.json refers to
// (directly, or through an image index), the root filesystem images of
// RootfsDir whose digest no recorded image has, and leftover temporary
// files; PruneKeep names root filesystem images to keep regardless. It
// waits (until ctx is done) for running pulls and imports to
// finish and blocks new ones while it works. Use Remove first to forget
// images.
func (s *Store) Prune(ctx context.Context, opts ...PruneOption) (PruneReport, error) {
	var rep PruneReport
	var o pruneOptions
	for _, opt := range opts {
		opt(&o)
	}
	unlock, err := s.lock(ctx, gcLockFile, syscall.LOCK_EX)
	if err != nil {
		return rep, fmt.Errorf("pruning %s: %w", s.dir, err)
	}
	defer unlock()
	if err := s.prune(ctx, &rep, o); err != nil {
		return rep, fmt.Errorf("pruning %s: %w", s.dir, err)
	}
	return rep, nil
}

func (s *Store) prune(ctx context.Context, rep *PruneReport, o pruneOptions) error {
	im, err := s.readIndex()
	if err != nil {
		return err
	}
	keep := map[string]bool{}       // blob hex
	keepRootfs := map[string]bool{} // manifest and config hex
	var walk func(d v1.Descriptor) error
	walk = func(d v1.Descriptor) error {
		if keep[d.Digest.Hex] {
			return nil
		}
		keep[d.Digest.Hex] = true
		switch {
		case d.MediaType.IsImage():
			b, err := s.readBlob(d.Digest)
			if err != nil {
				return err
			}
			m, err := v1.ParseManifest(bytes.NewReader(b))
			if err != nil {
				return fmt.Errorf("manifest %s: %w", d.Digest, err)
			}
			keepRootfs[d.Digest.Hex] = true
			keepRootfs[m.Config.Digest.Hex] = true
			keep[m.Config.Digest.Hex] = true
			for _, l := range m.Layers {
				keep[l.Digest.Hex] = true
			}
		case d.MediaType.IsIndex():
			b, err := s.readBlob(d.Digest)
			if err != nil {
				return err
			}
			child, err := v1.ParseIndexManifest(bytes.NewReader(b))
			if err != nil {
				return fmt.Errorf("index %s: %w", d.Digest, err)
			}
			for _, c := range child.Manifests {
				if ok, _ := s.hasBlob(c.Digest, -1); ok {
					if err := walk(c); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	for _, d := range im.Manifests {
		if err := walk(d); err != nil {
			// Refuse to guess: a damaged store is not pruned.
			return fmt.Errorf("image %s: %w", descName(d), err)
		}
	}
	n, freed := s.removeTemps()
	rep.TempFiles += n
	rep.Bytes += freed

	blobDir := s.path("blobs", "sha256")
	entries, err := os.ReadDir(blobDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		if keep[e.Name()] || checkHash(v1.Hash{Algorithm: "sha256", Hex: e.Name()}) != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		if err := os.Remove(filepath.Join(blobDir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		rep.Blobs++
		rep.Bytes += info.Size()
	}
	if err := atomicfile.SyncDir(blobDir); err != nil {
		return err
	}

	entries, err = os.ReadDir(s.RootfsDir())
	if err != nil {
		return err
	}
	for _, e := range entries {
		hex, ok := rootfsDigest(e.Name())
		if !ok || keepRootfs[hex] || !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(s.RootfsDir(), e.Name())
		if o.keep[path] {
			rep.KeptInUse = append(rep.KeptInUse, e.Name())
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		rep.Rootfs = append(rep.Rootfs, e.Name())
		rep.Bytes += info.Size()
	}
	return nil
}

// rootfsDigest returns the sha256 hex of a root filesystem image name
// ("sha256:<hex>.ext4", "sha256-<hex>.ext4" or "<hex>.ext4").
func rootfsDigest(file string) (string, bool) {
	base, ok := strings.CutSuffix(file, ".ext4")
	if !ok {
		return "", false
	}
	base = strings.TrimPrefix(strings.TrimPrefix(base, "sha256:"), "sha256-")
	if checkHash(v1.Hash{Algorithm: "sha256", Hex: base}) != nil {
		return "", false
	}
	return base, true
}
