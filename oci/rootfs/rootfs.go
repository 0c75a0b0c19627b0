package rootfs

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vmcompose/vmcompose/internal/atomicfile"
	"github.com/vmcompose/vmcompose/oci/rootfs/internal/ext4"
)

// DefaultMaxSize is the inflated size limit when WithMaxSize is not given.
const DefaultMaxSize int64 = 64 << 30

// ErrTooLarge means the image inflates past the limit set with WithMaxSize
// (or DefaultMaxSize). Retrying cannot help; raising the limit can.
var ErrTooLarge = errors.New("image too large")

// ErrDiffID means the image's layers are not the ones its config lists in
// rootfs.diff_ids: a count that differs, or a layer whose uncompressed
// content has another digest. The image is corrupt; retrying cannot help.
var ErrDiffID = errors.New("layers do not match the image config")

// Option configures Build and Ensure.
type Option func(*options) error

type options struct {
	maxSize int64
}

// WithMaxSize limits the total inflated size of the image: the bytes of the
// uncompressed layer tars, and separately the logical size of all file
// contents (which a sparse tar entry can make much larger). Build stops with
// an error wrapping ErrTooLarge and naming the layer as soon as either
// passes n.
func WithMaxSize(n int64) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("maximum size %d: must be positive", n)
		}
		o.maxSize = n
		return nil
	}
}

func makeOptions(opts []Option) (options, error) {
	o := options{maxSize: DefaultMaxSize}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return o, err
		}
	}
	return o, nil
}

// Build flattens img's layers into a read-only ext4 image at dst.
//
// It checks the layers against the config as the OCI image spec asks: as
// many rootfs.diff_ids as layers, and each layer's uncompressed content
// hashing to its diff ID (hashed while it is unpacked anyway). A mismatch
// is an error wrapping ErrDiffID that names the layer and both digests.
//
// It writes a temporary file in dst's directory and commits it with
// atomicfile (fsync, rename, fsync of the directory), so dst is either
// absent, the old file, or complete. On error or when
// ctx is cancelled the temporary file is removed. Cancellation is noticed
// between reads of a layer, so a layer whose reader blocks (a stalled
// download) must be bounded by its own context. Building the same image
// twice gives byte-identical files.
func Build(ctx context.Context, img v1.Image, dst string, opts ...Option) error {
	o, err := makeOptions(opts)
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return fmt.Errorf("image digest: %w", err)
	}
	layers, err := img.Layers()
	if err != nil {
		return fmt.Errorf("layers of %s: %w", digest, err)
	}
	diffIDs, err := diffIDs(img, len(layers))
	if err != nil {
		return err
	}

	tmp, err := atomicfile.Create(dst, 0o644)
	if err != nil {
		return fmt.Errorf("creating rootfs image: %w", err)
	}
	defer tmp.Cleanup()

	// Room for the data plus generous metadata; this only sizes the
	// descriptor table reserved at the start of the image.
	w, err := ext4.NewWriter(tmp.File, min(2*o.maxSize+1<<30, 16<<40-ext4.BlockSize))
	if err != nil {
		return err
	}
	sum := sha256.Sum256([]byte("vmcompose rootfs " + digest.String()))
	copy(w.UUID[:], sum[:16])
	w.UUID[6] = w.UUID[6]&0x0f | 0x40
	w.UUID[8] = w.UUID[8]&0x3f | 0x80

	t := newTree(w)
	lim := &limits{ctx: ctx, max: o.maxSize}
	for i, l := range layers {
		got, err := applyLayer(t, l, i, lim)
		if err != nil {
			return err
		}
		if got != diffIDs[i] {
			ld, _ := l.Digest()
			return fmt.Errorf("%w: layer %d (%s) unpacks to %s, but the config's rootfs.diff_ids[%d] is %s: the image is corrupt; push a fixed image and pull it again",
				ErrDiffID, i, ld, got, i, diffIDs[i])
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := w.Finish(t.root); err != nil {
		return fmt.Errorf("writing ext4 metadata for %s: %w", digest, err)
	}
	if err := tmp.Commit(); err != nil {
		return fmt.Errorf("writing rootfs image: %w", err)
	}
	return nil
}

// limits counts inflated bytes over all layers and watches ctx.
type limits struct {
	ctx     context.Context
	max     int64
	stream  int64 // uncompressed tar bytes read
	content int64 // logical file bytes
}

// countingReader counts uncompressed bytes and stops on cancel or limit.
type countingReader struct {
	r   io.Reader
	lim *limits
}

func (c *countingReader) Read(b []byte) (int, error) {
	if err := c.lim.ctx.Err(); err != nil {
		return 0, err
	}
	// Fail the read after the one that passed the limit: a reader that
	// returns data with an error can see the error dropped (io.ReadFull).
	if c.lim.stream > c.lim.max {
		return 0, fmt.Errorf("%w: uncompressed layers pass the limit of %d bytes", ErrTooLarge, c.lim.max)
	}
	n, err := c.r.Read(b)
	c.lim.stream += int64(n)
	return n, err
}

// diffIDs returns the config's rootfs.diff_ids, which the OCI image spec
// says list the digest of every layer's uncompressed content, in order.
func diffIDs(img v1.Image, layers int) ([]v1.Hash, error) {
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image config: %w", err)
	}
	if n := len(cfg.RootFS.DiffIDs); n != layers {
		return nil, fmt.Errorf("%w: the config's rootfs.diff_ids lists %d layers, the manifest %d: the image is corrupt; push a fixed image and pull it again",
			ErrDiffID, n, layers)
	}
	return cfg.RootFS.DiffIDs, nil
}

// applyLayer adds layer l to the tree and returns the digest of its
// uncompressed content (its diff ID), hashed as it streams by.
func applyLayer(t *tree, l v1.Layer, index int, lim *limits) (diffID v1.Hash, err error) {
	digest, err := l.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("layer %d digest: %w", index, err)
	}
	defer func() {
		if err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("layer %s: %w", digest, err)
		}
	}()
	rc, err := l.Uncompressed()
	if err != nil {
		return v1.Hash{}, err
	}
	defer rc.Close()
	h := sha256.New()
	stream := &countingReader{r: io.TeeReader(rc, h), lim: lim}
	if err := applyEntries(t, tar.NewReader(stream), index, lim); err != nil {
		return v1.Hash{}, err
	}
	// The tar reader stops at the end-of-archive marker; the diff ID
	// covers the padding after it too.
	if _, err := io.Copy(io.Discard, stream); err != nil {
		return v1.Hash{}, err
	}
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(h.Sum(nil))}, nil
}

func applyEntries(t *tree, tr *tar.Reader, index int, lim *limits) error {
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		if hdr.Typeflag == tar.TypeReg || hdr.Typeflag == tar.TypeRegA || hdr.Typeflag == tar.TypeGNUSparse || hdr.Typeflag == tar.TypeCont {
			lim.content += hdr.Size
			if hdr.Size < 0 || lim.content > lim.max {
				return fmt.Errorf("entry %s: %w: file contents pass the limit of %d bytes", hdr.Name, ErrTooLarge, lim.max)
			}
		}
		if err := t.apply(hdr, tr, index); err != nil {
			if errors.Is(err, ErrTooLarge) {
				return err
			}
			return fmt.Errorf("entry %s: %w", hdr.Name, err)
		}
	}
}
