package oci

import (
	"archive/tar"
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestPutRootfs: a root file system tar becomes a one-layer image with the
// config given, stored and recorded as a pulled one is (it validates),
// read back by its reference; a reference that does not parse is refused.
func TestPutRootfs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rootfs.tar")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	for _, h := range []*tar.Header{
		{Name: "usr/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "usr/bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "usr/bin/buildah", Typeflag: tar.TypeReg, Mode: 0o755, Size: 5},
		{Name: "bin", Typeflag: tar.TypeSymlink, Linkname: "usr/bin"},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte("#!x\n\n"))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	cfg := v1.Config{Cmd: []string{"buildah", "--version"}, Env: []string{"PATH=/usr/bin"}}
	img, err := ImageFromRootfs(path, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	ctx := context.Background()
	got, err := s.Put(ctx, "vmcompose.local/builder:1", img)
	if err != nil {
		t.Fatal(err)
	}
	if got.Ref != "vmcompose.local/builder:1" || got.Platform.OS != "linux" || got.Platform.Architecture != "amd64" {
		t.Errorf("stored as %s for %s", got.Ref, got.Platform)
	}
	back, err := s.Image("vmcompose.local/builder:1")
	if err != nil {
		t.Fatal(err)
	}
	layers, err := back.V1.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers, %v", len(layers), err)
	}
	if !slices.Equal(back.Config.Config.Cmd, cfg.Cmd) || !slices.Equal(back.Config.Config.Env, cfg.Env) || back.Digest != got.Digest {
		t.Errorf("read back: %+v, digest %s (stored %s)", back.Config.Config, back.Digest, got.Digest)
	}
	checkStore(t, s)
	if _, err := s.Put(ctx, "Not A Ref", img); err == nil {
		t.Errorf("Put under a reference that does not parse: no error")
	}
	if _, err := ImageFromRootfs(filepath.Join(t.TempDir(), "missing.tar"), cfg); err == nil {
		t.Errorf("ImageFromRootfs of a missing file: no error")
	}
}
