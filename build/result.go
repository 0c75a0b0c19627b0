package build

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vmcompose/vmcompose/oci"
)

// The builder pushes each image into one OCI layout on its cache volume,
// where the blobs of earlier builds are: buildah then writes (and
// compresses) only the new layers, and the host reads only the blobs its
// store lacks. A rebuild over a 100 MB base moves its new layers alone.
const guestLayout = guestDir + "/layout"

// pushCommand is the budScript line that writes the built image into the
// layout and its manifest digest into out/SERVICE.digest.
const pushCommand = `b push -q --digestfile $v/out/$VMCOMPOSE_SERVICE.digest $VMCOMPOSE_REF oci:` + guestLayout + `:$VMCOMPOSE_REF >/dev/null || { echo "vmcompose: writing the image failed" >&2; exit 125; }
`

// headScript prints the manifest digest of service $1's image, then its
// manifest and its config, each after a line with its size.
const headScript = prelude + `d=$(cat $v/out/$1.digest)
m=` + guestLayout + `/blobs/sha256/${d#sha256:}
c=$(grep -o '"config":{[^}]*}' $m | grep -o 'sha256:[0-9a-f]*' | head -n 1)
c=` + guestLayout + `/blobs/sha256/${c#sha256:}
echo $d; wc -c < $m; cat $m; wc -c < $c; cat $c
`

// blobScript prints the layout's blob $1 (hex of a sha256 digest).
const blobScript = prelude + `exec cat ` + guestLayout + `/blobs/sha256/$1
`

// fetch stores the built image under the service's image name, then
// under build.tags, reading from the builder the blobs the store lacks
// (the store verifies each against its digest).
func (b *Builder) fetch(ctx context.Context, j *job) (oci.Image, error) {
	img, err := b.guestImage(ctx, j.Service.Name)
	if err != nil {
		return oci.Image{}, fmt.Errorf("receiving the image: %w", err)
	}
	stored, err := b.Store.Put(ctx, j.ref, img)
	if err != nil {
		return oci.Image{}, err
	}
	for _, t := range j.Service.Build.Tags {
		if _, err := b.Store.Put(ctx, t, img); err != nil {
			return oci.Image{}, fmt.Errorf("tags: %s: %w", t, err)
		}
	}
	return stored, nil
}

// guestImage is the image budScript pushed for service, its layers read
// from the builder when asked for.
func (b *Builder) guestImage(ctx context.Context, service string) (v1.Image, error) {
	var out bytes.Buffer
	if err := b.run(ctx, headScript, []string{service}, nil, &out, nil); err != nil {
		return nil, err
	}
	r := bufio.NewReader(&out)
	if _, err := r.ReadString('\n'); err != nil { // the digest: the store computes it
		return nil, fmt.Errorf("the builder's answer: %w", err)
	}
	manifest, err := readSized(r)
	if err != nil {
		return nil, fmt.Errorf("the manifest: %w", err)
	}
	config, err := readSized(r)
	if err != nil {
		return nil, fmt.Errorf("the config: %w", err)
	}
	m, err := v1.ParseManifest(bytes.NewReader(manifest))
	if err != nil {
		return nil, fmt.Errorf("the manifest: %w", err)
	}
	core := &guestCore{b: b, ctx: ctx, manifest: manifest, config: config, parsed: m}
	return partial.CompressedToImage(core)
}

// readSized reads a line with a size, then that many bytes.
func readSized(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || n < 0 || n > 4<<20 {
		return nil, fmt.Errorf("size %q", strings.TrimSpace(line))
	}
	data := make([]byte, n)
	_, err = io.ReadFull(r, data)
	return data, err
}

// guestCore is an image in the builder's layout, as go-containerregistry
// reads one: manifest and config at hand, layers streamed on demand.
type guestCore struct {
	b                *Builder
	ctx              context.Context
	manifest, config []byte
	parsed           *v1.Manifest
}

func (c *guestCore) RawManifest() ([]byte, error)   { return c.manifest, nil }
func (c *guestCore) RawConfigFile() ([]byte, error) { return c.config, nil }

func (c *guestCore) MediaType() (types.MediaType, error) {
	if c.parsed.MediaType != "" {
		return c.parsed.MediaType, nil
	}
	return types.OCIManifestSchema1, nil
}

func (c *guestCore) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for _, l := range c.parsed.Layers {
		if l.Digest == h {
			return &guestLayer{core: c, desc: l}, nil
		}
	}
	return nil, fmt.Errorf("layer %s is not in the manifest", h)
}

type guestLayer struct {
	core *guestCore
	desc v1.Descriptor
}

func (l *guestLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *guestLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *guestLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }

// Compressed streams the blob out of the builder.
func (l *guestLayer) Compressed() (io.ReadCloser, error) {
	pr, pw := io.Pipe()
	go func() {
		pw.CloseWithError(l.core.b.run(l.core.ctx, blobScript, []string{l.desc.Digest.Hex}, nil, pw, nil))
	}()
	return pr, nil
}
