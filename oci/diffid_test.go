package oci

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/vmcompose/vmcompose/oci/rootfs"
)

// withDiffIDs returns img with its config's rootfs.diff_ids changed by edit.
func withDiffIDs(t *testing.T, img v1.Image, edit func([]v1.Hash) []v1.Hash) v1.Image {
	t.Helper()
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.RootFS.DiffIDs = edit(cfg.RootFS.DiffIDs)
	bad, err := mutate.ConfigFile(img, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return bad
}

// rootfsEntries lists the files in the store's rootfs folder, lock files
// left out (they stay by design).
func rootfsEntries(t *testing.T, s *Store) []string {
	t.Helper()
	entries, err := os.ReadDir(s.RootfsDir())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".lock") {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestRootfsRefusesLayersThatDoNotMatchDiffIDs(t *testing.T) {
	host, _ := newRegistry(t, nil)
	good := imageOf(t, "linux/amd64", layerOf(t, 1, 4096), layerOf(t, 2, 4096))
	layers, err := good.Layers()
	if err != nil {
		t.Fatal(err)
	}
	layer1, _ := layers[1].Digest()
	cfg, _ := good.ConfigFile()
	real0, real1 := cfg.RootFS.DiffIDs[0], cfg.RootFS.DiffIDs[1]

	for _, c := range []struct {
		name string
		edit func([]v1.Hash) []v1.Hash
		want string // after "building rootfs of <manifest digest>: "
	}{
		{"wrong", func(d []v1.Hash) []v1.Hash { return []v1.Hash{d[0], d[0]} },
			"layers do not match the image config: layer 1 (" + layer1.String() + ") unpacks to " + real1.String() +
				", but the config's rootfs.diff_ids[1] is " + real0.String() + ": the image is corrupt; push a fixed image and pull it again"},
		{"missing", func(d []v1.Hash) []v1.Hash { return d[:1] },
			"layers do not match the image config: the config's rootfs.diff_ids lists 1 layers, the manifest 2: the image is corrupt; push a fixed image and pull it again"},
	} {
		t.Run(c.name, func(t *testing.T) {
			ref := host + "/diffid/" + c.name + ":1"
			bad := withDiffIDs(t, good, c.edit)
			push(t, ref, bad)
			s := openStore(t)
			ctx := context.Background()
			img, err := s.Pull(ctx, ref, WithPlatform("linux/amd64"))
			if err != nil {
				t.Fatal(err)
			}
			_, _, err = rootfs.Ensure(ctx, img.V1, s.RootfsDir())
			want := "building rootfs of " + digestOf(t, bad).String() + ": " + c.want
			if err == nil || err.Error() != want {
				t.Fatalf("got  %v\nwant %s", err, want)
			}
			if !errors.Is(err, rootfs.ErrDiffID) {
				t.Errorf("%v: not rootfs.ErrDiffID", err)
			}
			if left := rootfsEntries(t, s); len(left) > 0 {
				t.Errorf("left in the rootfs folder: %v", left)
			}

			// The fixed image, pushed under the same tag, pulls and builds.
			push(t, ref, good)
			img, err = s.Pull(ctx, ref, WithPlatform("linux/amd64"), WithPolicy(PullAlways))
			if err != nil {
				t.Fatal(err)
			}
			path, built, err := rootfs.Ensure(ctx, img.V1, s.RootfsDir())
			if err != nil || !built {
				t.Fatalf("fixed image: built %v, %v", built, err)
			}
			if out, err := exec.Command("e2fsck", "-fn", path).CombinedOutput(); err != nil {
				t.Errorf("e2fsck -fn %s: %v\n%s", filepath.Base(path), err, out)
			}
			checkImages(t, s)
		})
	}
}
