package oci

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vmcompose/vmcompose/internal/atomicfile"
)

func (s *Store) blobPath(h v1.Hash) string {
	return s.path("blobs", h.Algorithm, h.Hex)
}

// hasBlob reports whether the blob is in the store with the given size
// (size < 0: any size). Blobs only reach their final name verified, so
// presence is proof of content. A symlink is refused.
func (s *Store) hasBlob(h v1.Hash, size int64) (bool, error) {
	if err := checkHash(h); err != nil {
		return false, err
	}
	fi, err := os.Lstat(s.blobPath(h))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() {
		return false, terminal(nil, nil, "blob %s is not a regular file (refusing symlinks and devices)", s.blobPath(h))
	}
	return size < 0 || fi.Size() == size, nil
}

func checkHash(h v1.Hash) error {
	if h.Algorithm != "sha256" || len(h.Hex) != 64 {
		return terminal(ErrDigest, nil, "digest %q: only sha256 is supported", h)
	}
	if _, err := hex.DecodeString(h.Hex); err != nil {
		return terminal(ErrDigest, nil, "digest %q: not hex", h)
	}
	return nil
}

// writeBlob copies r into the store as blob h: into a temporary file in the
// blob directory, then (size and, if verify, digest checked) committed with
// atomicfile: fsynced, renamed into place, the directory fsynced. On any
// error nothing is left behind. Pass verify=false only for readers that
// verify the digest themselves before returning io.EOF
// (go-containerregistry's remote layers do). onWrite, if set, is called with
// each chunk's length.
func (s *Store) writeBlob(h v1.Hash, size int64, r io.Reader, verify bool, onWrite func(int)) error {
	if err := checkHash(h); err != nil {
		return err
	}
	f, err := atomicfile.Create(s.blobPath(h), 0o444)
	if err != nil {
		return err
	}
	defer f.Cleanup()
	var hasher hash.Hash
	if verify {
		hasher = sha256.New()
	}
	w := &blobWriter{f: f.File, h: hasher, onWrite: onWrite}
	n, err := io.CopyBuffer(w, r, make([]byte, 1<<20))
	if err != nil {
		return err
	}
	if size >= 0 && n != size {
		return terminal(ErrDigest, nil, "blob %s: got %d bytes, want %d", h, n, size)
	}
	if hasher != nil {
		if got := hex.EncodeToString(hasher.Sum(nil)); got != h.Hex {
			return terminal(ErrDigest, nil, "blob %s: content has digest sha256:%s", h, got)
		}
	}
	return f.Commit()
}

type blobWriter struct {
	f       *os.File
	h       hash.Hash
	onWrite func(int)
}

func (w *blobWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if w.h != nil {
		w.h.Write(p[:n])
	}
	if w.onWrite != nil && n > 0 {
		w.onWrite(n)
	}
	return n, err
}

// once runs fetch unless blob h is already present or another goroutine of
// this process is fetching it, in which case it waits and checks again. It
// reports whether fetch ran. (Processes do not coordinate: two may download
// the same blob at once; the renames are atomic and the content identical.)
func (s *Store) once(h v1.Hash, size int64, fetch func() error) (fetched bool, err error) {
	for {
		if ok, err := s.hasBlob(h, size); err != nil || ok {
			return false, err
		}
		s.mu.Lock()
		ch, busy := s.inflight[h]
		if !busy {
			ch = make(chan struct{})
			s.inflight[h] = ch
		}
		s.mu.Unlock()
		if busy {
			<-ch
			continue
		}
		err := fetch()
		s.mu.Lock()
		delete(s.inflight, h)
		s.mu.Unlock()
		close(ch)
		if err != nil {
			return true, err
		}
		return true, nil
	}
}

// writeBytes stores a small blob (manifest, config) after verifying it.
func (s *Store) writeBytes(h v1.Hash, b []byte) error {
	_, err := s.once(h, int64(len(b)), func() error {
		return s.writeBlob(h, int64(len(b)), bytes.NewReader(b), true, nil)
	})
	if err != nil {
		return fmt.Errorf("blob %s: %w", h, err)
	}
	return nil
}
