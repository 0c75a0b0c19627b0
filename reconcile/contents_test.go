package reconcile_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"testing"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/reconcile"
)

// TestDigestKey: the host's key is made once, 0600, the same for every
// process that asks at the same time, and read back after.
func TestDigestKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	keys := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range keys {
		wg.Go(func() {
			k, err := reconcile.DigestKey(dir)
			if err != nil {
				t.Error(err)
			}
			keys[i] = k
		})
	}
	wg.Wait()
	for _, k := range keys {
		if len(k) != 32 || !bytes.Equal(k, keys[0]) {
			t.Fatalf("keys differ: %x", keys)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, reconcile.DigestKeyFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v %v", fi, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("the store has %d entries, want the key alone", len(ents))
	}
	again, err := reconcile.DigestKey(dir)
	if err != nil || !bytes.Equal(again, keys[0]) {
		t.Errorf("read back %x, %v", again, err)
	}
}

// TestContentDigests: a digest depends on the content and on the key,
// and is not the content's plain sha256.
func TestContentDigests(t *testing.T) {
	p := &project.Project{Contents: map[string][]byte{"secrets:pw": []byte("hunter2"), "configs:c": []byte("hunter2")}}
	a := reconcile.ContentDigests(p, bytes.Repeat([]byte{1}, 32))
	b := reconcile.ContentDigests(p, bytes.Repeat([]byte{2}, 32))
	if len(a) != 2 || a["secrets:pw"] == b["secrets:pw"] || a["secrets:pw"] == a["configs:c"] {
		t.Errorf("digests %v and %v", a, b)
	}
	p.Contents["secrets:pw"] = []byte("hunter3")
	if c := reconcile.ContentDigests(p, bytes.Repeat([]byte{1}, 32)); c["secrets:pw"] == a["secrets:pw"] || c["configs:c"] != a["configs:c"] {
		t.Errorf("after a change: %v, before %v", c, a)
	}
}

// TestGuestFiles: where and how the guest writes a service's secrets and
// configs, as docker compose places them.
func TestGuestFiles(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(`
services:
  web:
    image: nginx
    secrets: [pw, {source: pw, target: nested/pw}, {source: tls, target: /etc/tls.key, uid: "100", gid: "101", mode: 0440}]
    configs: [app, {source: app, target: /etc/app.conf, mode: 0600, uid: "7"}]
secrets:
  pw: {environment: PW}
  tls: {environment: TLS}
configs:
  app: {content: "a=1"}
`), 0o644)
	p, err := project.Load(context.Background(), project.Options{WorkingDir: dir, Env: []string{"PW=pw", "TLS=tls"}})
	if err != nil {
		t.Fatal(err)
	}
	files, err := reconcile.GuestFiles(p, p.Services["web"])
	if err != nil {
		t.Fatal(err)
	}
	want := []agent.File{
		{Path: "/run/secrets/pw", Content: []byte("pw"), Secret: true},
		{Path: "/run/secrets/nested/pw", Content: []byte("pw"), Secret: true},
		{Path: "/etc/tls.key", Content: []byte("tls"), Mode: 0o440, UID: 100, GID: 101, Secret: true},
		{Path: "/app", Content: []byte("a=1")},
		{Path: "/etc/app.conf", Content: []byte("a=1"), Mode: 0o600, UID: 7},
	}
	if !reflect.DeepEqual(files, want) {
		t.Errorf("files\n%+v\nwant\n%+v", files, want)
	}
	if got := planner.SecretPaths(p.Services["web"]); !reflect.DeepEqual(got, []string{"/run/secrets", "/etc/tls.key"}) {
		t.Errorf("secret paths %q", got)
	}
}

// TestStateHasNoContents: the state records the guests' files without
// their contents, and leaves the caller's record as it was.
func TestStateHasNoContents(t *testing.T) {
	dir := t.TempDir()
	in := reconcile.InstanceState{VM: "web-1", Guest: agent.Spec{Files: []agent.File{{Path: "/run/secrets/pw", Content: []byte("hunter2"), Secret: true}}}}
	if err := reconcile.WriteState(dir, reconcile.State{Project: "p", Instances: []reconcile.InstanceState{in}}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, reconcile.StateFile))
	if bytes.Contains(b, []byte("hunter2")) || bytes.Contains(b, []byte("aHVudGVyMg")) || !bytes.Contains(b, []byte("/run/secrets/pw")) {
		t.Errorf("state.json:\n%s", b)
	}
	if string(in.Guest.Files[0].Content) != "hunter2" {
		t.Error("WriteState changed the caller's record")
	}
}
