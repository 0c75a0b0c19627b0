package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// slowLayer is an endless layer: one 32 GiB file whose content trickles in.
type slowLayer struct{}

func (slowLayer) Digest() (v1.Hash, error) {
	return v1.NewHash("sha256:" + string(bytes.Repeat([]byte("ab"), 32)))
}
func (l slowLayer) DiffID() (v1.Hash, error)           { return l.Digest() }
func (l slowLayer) Compressed() (io.ReadCloser, error) { return l.Uncompressed() }
func (slowLayer) Size() (int64, error)                 { return 1, nil }
func (slowLayer) MediaType() (types.MediaType, error)  { return types.OCIUncompressedLayer, nil }
func (slowLayer) Uncompressed() (io.ReadCloser, error) {
	var hdr bytes.Buffer
	tw := tar.NewWriter(&hdr)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "endless", Size: 32 << 30, Mode: 0o644}); err != nil {
		return nil, err
	}
	return io.NopCloser(io.MultiReader(&hdr, trickle{})), nil
}

type trickle struct{}

func (trickle) Read(b []byte) (int, error) {
	time.Sleep(time.Millisecond)
	n := min(len(b), 64<<10)
	for i := range b[:n] {
		b[i] = 1
	}
	return n, nil
}

func TestBuildCancelMidway(t *testing.T) {
	img, err := mutate.AppendLayers(empty.Image, slowLayer{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	dir := t.TempDir()
	start := time.Now()
	err = Build(ctx, img, filepath.Join(dir, "rootfs.ext4"))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Build: %v, want the context's error", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Build took %s to notice the cancellation", d)
	}
	assertEmptyDir(t, dir)
}
