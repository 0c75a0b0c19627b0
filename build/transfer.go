package build

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/internal/atomicfile"
	"github.com/vmcompose/vmcompose/oci"
)

// sent is what the host knows the builder holds of a service's context:
// the manifest it sent, and the token the guest keeps beside the copy. A
// token that differs from the guest's (a new cache volume, a sync cut
// short before it was recorded) means the copy is unknown: it is sent
// whole again.
type sent struct {
	Token    string   `json:"token"`
	Manifest Manifest `json:"manifest"`
}

func (b *Builder) sentFile(service string) string {
	return filepath.Join(b.Dir, "ctx", service+".json")
}

func (b *Builder) readSent(service string) sent {
	var s sent
	data, err := os.ReadFile(b.sentFile(service))
	if err == nil && json.Unmarshal(data, &s) == nil {
		return s
	}
	return sent{}
}

// resetScript empties service $1's context copy and records token $2.
const resetScript = prelude + `rm -rf $v/ctx/$1 && mkdir -p $v/ctx/$1 && echo "$2" > $v/ctx/$1.id
`

// sendContext brings the builder's copies of the job's context and
// additional contexts up to date, sending only what changed since the
// last build.
func (b *Builder) sendContext(ctx context.Context, j *job, st *guestState) error {
	for _, c := range j.contexts {
		if err := b.sendTree(ctx, c, st); err != nil {
			return fmt.Errorf("sending the context %s: %w", c.dir, err)
		}
	}
	return nil
}

// sendTree brings one copy up to date with c.
func (b *Builder) sendTree(ctx context.Context, c buildContext, st *guestState) error {
	prev := b.readSent(c.key)
	if prev.Token == "" || st.contexts[c.key] != prev.Token {
		prev = sent{Token: newToken()}
		if err := b.run(ctx, resetScript, []string{c.key, prev.Token}, nil, nil, nil); err != nil {
			return fmt.Errorf("preparing the builder's copy: %w", err)
		}
		st.contexts[c.key] = prev.Token
	}
	if changes := c.manifest.Changes(prev.Manifest, c.dir); len(changes) > 0 {
		if err := b.sync(ctx, guestContext(c.key), changes); err != nil {
			return err
		}
	}
	data, err := json.Marshal(sent{Token: prev.Token, Manifest: c.manifest})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(b.sentFile(c.key)), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(b.sentFile(c.key), data, 0o600)
}

func newToken() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// sendDockerfile puts the job's Dockerfile (a file anywhere, or
// dockerfile_inline) and its ignore file where budArgs points buildah.
func (b *Builder) sendDockerfile(ctx context.Context, j *job) error {
	entries := []agent.SyncEntry{memEntry("Dockerfile", j.dockerfile)}
	if j.ignoreFile != "" {
		data, err := os.ReadFile(j.ignoreFile)
		if err != nil {
			return err
		}
		entries = append(entries, memEntry(".dockerignore", data))
	}
	return b.sync(ctx, path.Join(guestDir, "df", j.Service.Name), entries)
}

func memEntry(name string, data []byte) agent.SyncEntry {
	return agent.SyncEntry{Op: agent.SyncFile, Path: name, Mode: 0o644, Size: int64(len(data)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }}
}

// Record is what the last build of a service was made from, for telling
// whether its image is older than its context.
type Record struct {
	Image string    `json:"image"` // the manifest digest
	Key   string    `json:"key"`   // what it was built from (job.key)
	Built time.Time `json:"built"`
}

func recordFile(dir, service string) string {
	return filepath.Join(dir, "built", service+".json")
}

func (b *Builder) record(j *job, img oci.Image) error {
	r := Record{Image: img.Digest.String(), Key: j.key, Built: time.Now().UTC()}
	data, err := json.Marshal(r)
	if err != nil {
		return err
	}
	file := recordFile(b.Dir, j.Service.Name)
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(file, data, 0o600)
}

// ReadRecord reads the record of a service's last build in the builder
// state dir dir; ok is false when there is none.
func ReadRecord(dir, service string) (r Record, ok bool, err error) {
	data, err := os.ReadFile(recordFile(dir, service))
	if errors.Is(err, fs.ErrNotExist) {
		return Record{}, false, nil
	}
	if err == nil {
		err = json.Unmarshal(data, &r)
	}
	return r, err == nil, err
}

// OlderThanContext says what of a build: service's context (or its
// Dockerfile) changed after its image img was built, or "" when nothing
// did or the image was not built here (imported, pulled).
func OlderThanContext(dir string, svc types.ServiceConfig, img oci.Image) string {
	r, ok, err := ReadRecord(dir, svc.Name)
	if err != nil || !ok || r.Image != img.Digest.String() {
		return ""
	}
	cfg := svc.Build
	man, err := ListContext(cfg.Context, dockerfilePath(cfg.Context, cfg.Dockerfile))
	if err != nil {
		return ""
	}
	var newest Entry
	for _, e := range man {
		if e.ModTime > newest.ModTime {
			newest = e
		}
	}
	if newest.ModTime <= r.Built.UnixNano() {
		return ""
	}
	return fmt.Sprintf("%s changed at %s", newest.Path, time.Unix(0, newest.ModTime).Format(time.DateTime))
}
