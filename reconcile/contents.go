package reconcile

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/project"
)

// DigestKeyFile is the name, in the store, of the host's key for the
// digests of secrets' and configs' contents.
const DigestKeyFile = "content-digest.key"

// DigestKey returns the host's key for ContentDigests, kept 0600 in the
// store directory dir and made on first use. A digest recorded in
// state.json (a field of an instance) must not let anyone who reads the
// state try passwords against it: without the key, the digest of a short
// password tells nothing. Two processes that make it at once agree on
// one: the first link wins.
func DigestKey(dir string) ([]byte, error) {
	path := filepath.Join(dir, DigestKeyFile)
	key, err := os.ReadFile(path)
	if err == nil && len(key) == 32 {
		return key, nil
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("reading the content digest key: %w", err)
	}
	if err == nil {
		return nil, fmt.Errorf("content digest key %s: %d bytes, want 32: remove it (services with secrets or configs are then recreated once)", path, len(key))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("making the content digest key: %w", err)
	}
	key = make([]byte, 32)
	rand.Read(key)
	tmp, err := os.CreateTemp(dir, ".tmp-"+DigestKeyFile+"-*") // 0600
	if err != nil {
		return nil, fmt.Errorf("making the content digest key: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(key)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), path)
	}
	if errors.Is(err, fs.ErrExist) {
		return DigestKey(dir)
	}
	if err != nil {
		return nil, fmt.Errorf("making the content digest key: %w", err)
	}
	return key, nil
}

// ContentDigests returns, by planner.ContentKey, an HMAC-SHA256 with key
// of each secret's and config's content, for planner.Desired.Contents.
func ContentDigests(p *project.Project, key []byte) map[string]string {
	out := make(map[string]string, len(p.Contents))
	for k, content := range p.Contents {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(k))
		m.Write([]byte{0})
		m.Write(content)
		out[k] = hex.EncodeToString(m.Sum(nil)[:16])
	}
	return out
}

// StoreContentDigests is ContentDigests with the key of the store dir.
func StoreContentDigests(p *project.Project, dir string) (map[string]string, error) {
	if len(p.Contents) == 0 {
		return nil, nil
	}
	key, err := DigestKey(dir)
	if err != nil {
		return nil, err
	}
	return ContentDigests(p, key), nil
}

// GuestFiles are the secrets and configs of a service as its guest writes
// them (see agent.File): secrets under /run/secrets or at their absolute
// target, configs at their target, with compose's uid, gid and mode
// (0444 and root by default). The contents come from the project, which
// read them at load.
func GuestFiles(p *project.Project, svc types.ServiceConfig) ([]agent.File, error) {
	var out []agent.File
	add := func(field string, ref types.FileReferenceConfig, path string, secret bool) error {
		content, ok := p.Contents[planner.ContentKey(field, ref.Source)]
		if !ok {
			return fmt.Errorf("%s: %q: its content could not be read: see `vmcompose plan`", field, ref.Source)
		}
		f := agent.File{Path: path, Content: content, Secret: secret}
		if ref.Mode != nil {
			f.Mode = uint32(*ref.Mode)
		}
		var err error
		if f.UID, err = numericID(ref.UID); err != nil {
			return fmt.Errorf("%s: %q: uid: %w", field, ref.Source, err)
		}
		if f.GID, err = numericID(ref.GID); err != nil {
			return fmt.Errorf("%s: %q: gid: %w", field, ref.Source, err)
		}
		out = append(out, f)
		return nil
	}
	for _, ref := range svc.Secrets {
		if err := add("secrets", types.FileReferenceConfig(ref), planner.SecretTarget(ref), true); err != nil {
			return nil, err
		}
	}
	for _, ref := range svc.Configs {
		if err := add("configs", types.FileReferenceConfig(ref), planner.ConfigTarget(ref), false); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func numericID(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	return strconv.Atoi(s)
}
