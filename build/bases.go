package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/vmcompose/vmcompose/oci"
)

// baseTag is a name buildah must find a base under, as the Dockerfile
// writes it: id is the image buildah loaded it as, key the name's file in
// the guest's tags directory.
type baseTag struct{ id, ref, key string }

// base is an image a Dockerfile names, as the store has it.
type base struct {
	ref name.Reference
	img oci.Image
}

// resolveBases gets the bases a Dockerfile names through vmcompose's store
// (pulled when missing, or again with pull): the builder never reaches a
// registry itself.
func (b *Builder) resolveBases(ctx context.Context, refs []string, pull bool) ([]base, error) {
	policy := oci.PullMissing
	if pull {
		policy = oci.PullAlways
	}
	var out []base
	for _, ref := range refs {
		r, err := name.ParseReference(ref)
		if err != nil {
			return nil, fmt.Errorf("FROM %s: %w", ref, err)
		}
		if _, ok := r.(name.Digest); ok {
			return nil, fmt.Errorf("FROM %s: a base named by digest is not supported yet: name it by tag", ref)
		}
		img, err := b.Store.Pull(ctx, ref, oci.WithPolicy(policy))
		if err != nil {
			return nil, fmt.Errorf("FROM %s: %w", ref, err)
		}
		out = append(out, base{ref: r, img: img})
	}
	return out, nil
}

// loadBases loads into the builder's storage the bases it has not loaded
// yet, and returns the names to give them.
func (b *Builder) loadBases(ctx context.Context, bases []base, st *guestState) ([]baseTag, error) {
	var tags []baseTag
	for _, bs := range bases {
		id, err := b.loadBase(ctx, bs.ref, bs.img, st)
		if err != nil {
			return nil, fmt.Errorf("FROM %s: loading it into the builder: %w", bs.ref, err)
		}
		n := buildahName(bs.ref)
		tags = append(tags, baseTag{id: id, ref: n, key: tagKey(n)})
	}
	return tags, nil
}

// buildahName is a reference as buildah spells it: docker.io, not
// go-containerregistry's index.docker.io.
func buildahName(r name.Reference) string {
	return strings.Replace(r.Name(), name.DefaultRegistry+"/", "docker.io/", 1)
}

func tagKey(ref string) string {
	sum := sha256.Sum256([]byte(ref))
	return hex.EncodeToString(sum[:8])
}

// loadScript loads the docker archive on stdin into buildah's storage
// and records its image ID as base $1.
const loadScript = prelude + `in=$v/in-$1.tar
cat > $in
id=$(b pull -q docker-archive:$in)
rm -f $in
echo "$id" > $v/bases/$1
echo "$id"
`

// loadBase sends img into the builder as a docker archive written on the
// fly, unless the builder loaded that manifest before, and returns its
// buildah image ID.
func (b *Builder) loadBase(ctx context.Context, r name.Reference, img oci.Image, st *guestState) (string, error) {
	key := img.Digest.Hex
	if id, ok := st.bases[key]; ok {
		return id, nil
	}
	v1img, err := b.Store.Layout().Image(img.Digest)
	if err != nil {
		return "", err
	}
	tag, err := name.NewTag(strings.SplitN(r.Name(), "@", 2)[0])
	if err != nil {
		return "", err
	}
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(tarball.Write(tag, v1img, pw)) }()
	defer pr.Close()
	var out strings.Builder
	if err := b.run(ctx, loadScript, []string{key}, pr, &out, nil); err != nil {
		return "", err
	}
	id := strings.TrimSpace(out.String())
	if id == "" {
		return "", fmt.Errorf("buildah gave no image ID")
	}
	st.bases[key] = id
	return id, nil
}
