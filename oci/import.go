package oci

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Import records the images of an archive, for offline use, and returns
// them. The archive (optionally gzip-compressed) is either
//
//   - an OCI image layout in a tar ("oci-archive", and docker save since
//     Docker 25, which writes one): images are named by the
//     io.containerd.image.name annotation of index.json, else by
//     org.opencontainers.image.ref.name when it is a full reference (a bare
//     tag such as "1.0" names nothing and the entry is skipped); image
//     indexes are resolved to the platform (WithPlatform); blobs keep their
//     digests;
//   - or the older docker save format (manifest.json with RepoTags), read
//     with go-containerregistry's tarball package, which gzips the
//     uncompressed layers, so digests differ from the registry's.
//
// Every blob is verified against its digest before it enters the store; an
// archive that names no image is an error wrapping ErrTerminal. Honours
// WithPlatform, WithProgress and WithLogger. Errors read "importing FILE: …".
func (s *Store) Import(ctx context.Context, file string, opts ...Option) ([]Image, error) {
	o, err := makeOptions(opts)
	if err != nil {
		return nil, fmt.Errorf("importing %s: %w", file, err)
	}
	unlock, err := s.lock(ctx, gcLockFile, syscall.LOCK_SH)
	if err != nil {
		return nil, fmt.Errorf("importing %s: %w", file, err)
	}
	defer unlock()
	imgs, err := s.importFile(ctx, file, o)
	if err != nil {
		return nil, fmt.Errorf("importing %s: %w", file, err)
	}
	return imgs, nil
}

// openArchive opens file as a tar stream, gunzipping it if needed.
func openArchive(file string) (io.Reader, io.Closer, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReaderSize(f, 1<<20)
	magic, _ := br.Peek(2)
	if len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			f.Close()
			return nil, nil, terminal(nil, err, "gzip: %v", err)
		}
		return zr, f, nil
	}
	return br, f, nil
}

func (s *Store) importFile(ctx context.Context, file string, o *options) ([]Image, error) {
	r, c, err := openArchive(file)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	rep := &reporter{sink: o.progress, ref: file}
	var indexJSON, manifestJSON []byte
	var layoutSeen bool
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, terminal(nil, err, "not a tar archive: %v", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		p := path.Clean(strings.TrimPrefix(h.Name, "./"))
		switch {
		case p == "index.json":
			if indexJSON, err = readSmall(tr, h); err != nil {
				return nil, err
			}
		case p == "manifest.json":
			if manifestJSON, err = readSmall(tr, h); err != nil {
				return nil, err
			}
		case p == "oci-layout":
			layoutSeen = true
		case strings.HasPrefix(p, "blobs/sha256/"):
			hash := v1.Hash{Algorithm: "sha256", Hex: strings.TrimPrefix(p, "blobs/sha256/")}
			if checkHash(hash) != nil {
				continue
			}
			fetched, err := s.once(hash, h.Size, func() error {
				return s.writeBlob(hash, h.Size, &ctxReader{ctx: ctx, r: tr}, true, nil)
			})
			if err != nil {
				return nil, fmt.Errorf("blob %s: %w", hash, err)
			}
			if fetched {
				rep.send(Event{Kind: EventLayerDone, Digest: hash.String(), Current: h.Size, Total: h.Size})
			} else {
				rep.send(Event{Kind: EventLayerPresent, Digest: hash.String(), Total: h.Size})
			}
		}
	}
	switch {
	case layoutSeen && indexJSON != nil:
		return s.importLayout(indexJSON, o, rep)
	case manifestJSON != nil:
		return s.importDockerSave(ctx, file, o, rep)
	}
	return nil, terminal(nil, nil, "neither an OCI layout archive (oci-layout, index.json) nor a docker save archive (manifest.json)")
}

func readSmall(r io.Reader, h *tar.Header) ([]byte, error) {
	if h.Size > 16<<20 {
		return nil, terminal(nil, nil, "%s: %d bytes is too large", h.Name, h.Size)
	}
	return io.ReadAll(r)
}

// importLayout records the images named in an archive's index.json; their
// blobs are in the store already.
func (s *Store) importLayout(indexJSON []byte, o *options, rep *reporter) ([]Image, error) {
	var im v1.IndexManifest
	if err := json.Unmarshal(indexJSON, &im); err != nil {
		return nil, terminal(nil, err, "index.json: %v", err)
	}
	var out []Image
	for _, d := range im.Manifests {
		ref := archiveName(d)
		if ref == "" {
			o.logger.Debug("skipping unnamed image in archive", "digest", d.Digest.String())
			continue
		}
		r, err := name.ParseReference(ref)
		if err != nil {
			o.logger.Debug("skipping image with invalid name", "name", ref, "err", err)
			continue
		}
		n := canonical(r)
		var hint *v1.Platform
		if d.MediaType.IsIndex() {
			b, err := s.readBlob(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", n, err)
			}
			child, err := v1.ParseIndexManifest(bytes.NewReader(b))
			if err != nil {
				return nil, terminal(nil, err, "%s: index %s: %v", n, d.Digest, err)
			}
			if d, err = pickPlatform(child, o.platform); err != nil {
				return nil, fmt.Errorf("%s: %w", n, err)
			}
			hint = d.Platform
		}
		if !d.MediaType.IsImage() {
			continue
		}
		platform, err := s.checkComplete(d, hint)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		desc := v1.Descriptor{MediaType: d.MediaType, Size: d.Size, Digest: d.Digest, Platform: &platform}
		if err := s.record(n, desc, v1.Hash{}); err != nil {
			return nil, err
		}
		img, err := s.lookup(n, platform)
		if err != nil {
			return nil, err
		}
		rep.send(Event{Kind: EventDone, Ref: n, Digest: d.Digest.String(), Total: img.Size})
		out = append(out, img)
	}
	if len(out) == 0 {
		return nil, terminal(ErrNotFound, nil, "no named image in the archive: tag the image before saving it (io.containerd.image.name or a full org.opencontainers.image.ref.name)")
	}
	return out, nil
}

// archiveName returns the full reference an archive's index.json gives an
// image, or "" when it gives only a tag or nothing.
func archiveName(d v1.Descriptor) string {
	if n := d.Annotations[AnnotationContainerdName]; n != "" {
		return n
	}
	n := d.Annotations[AnnotationRefName]
	if strings.ContainsAny(n, "/:@") {
		return n
	}
	return ""
}

// checkComplete verifies that the manifest, config and layers of d are in
// the store and returns the platform from the config, completed by hint.
func (s *Store) checkComplete(d v1.Descriptor, hint *v1.Platform) (v1.Platform, error) {
	b, err := s.readBlob(d.Digest)
	if err != nil {
		return v1.Platform{}, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(b))
	if err != nil {
		return v1.Platform{}, terminal(nil, err, "manifest %s: %v", d.Digest, err)
	}
	for _, l := range m.Layers {
		if !l.MediaType.IsDistributable() {
			continue
		}
		if ok, err := s.hasBlob(l.Digest, l.Size); err != nil || !ok {
			return v1.Platform{}, terminal(nil, err, "layer %s is missing from the archive", l.Digest)
		}
	}
	cb, err := s.readBlob(m.Config.Digest)
	if err != nil {
		return v1.Platform{}, err
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(cb))
	if err != nil {
		return v1.Platform{}, terminal(nil, err, "config %s: %v", m.Config.Digest, err)
	}
	return mergePlatform(cfg, hint), nil
}

// readBlob reads a small blob from the store.
func (s *Store) readBlob(h v1.Hash) ([]byte, error) {
	ok, err := s.hasBlob(h, -1)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, terminal(nil, nil, "blob %s is missing", h)
	}
	return os.ReadFile(s.blobPath(h))
}

// importDockerSave records the tagged images of a docker save archive in the
// format before Docker 25 (manifest.json, <id>/layer.tar).
func (s *Store) importDockerSave(ctx context.Context, file string, o *options, rep *reporter) ([]Image, error) {
	opener := func() (io.ReadCloser, error) {
		r, c, err := openArchive(file)
		if err != nil {
			return nil, err
		}
		return readCloser{r, c}, nil
	}
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return nil, terminal(nil, err, "manifest.json: %v", err)
	}
	var out []Image
	for _, entry := range m {
		for _, t := range entry.RepoTags {
			tag, err := name.NewTag(t)
			if err != nil {
				o.logger.Debug("skipping invalid tag", "tag", t, "err", err)
				continue
			}
			img, err := tarball.Image(opener, &tag)
			if err != nil {
				return nil, terminal(nil, err, "%s: %v", t, err)
			}
			n := canonical(tag)
			r := &reporter{sink: rep.sink, ref: n}
			res, err := s.store(ctx, storeInput{img: img, name: n}, o, r)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", n, err)
			}
			out = append(out, res)
		}
	}
	if len(out) == 0 {
		return nil, terminal(ErrNotFound, nil, "no tagged image in the archive: tag the image before saving it")
	}
	return out, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// ctxReader stops reading when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
