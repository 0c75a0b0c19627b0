package oci

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func TestOpenCreatesLayout(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "oci-layout"))
	if err != nil || !strings.Contains(string(b), `"imageLayoutVersion":"1.0.0"`) {
		t.Fatalf("oci-layout: %q, %v", b, err)
	}
	if fi, err := os.Stat(s.RootfsDir()); err != nil || !fi.IsDir() || s.RootfsDir() != filepath.Join(dir, "rootfs") {
		t.Errorf("rootfs dir %s: %v", s.RootfsDir(), err)
	}
	p, err := layout.FromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.ImageIndex(); err != nil {
		t.Fatal(err)
	}
	if imgs, err := s.Images(); err != nil || len(imgs) != 0 {
		t.Errorf("Images() = %v, %v", imgs, err)
	}
	if _, err := s.Image("alpine"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Image(alpine) on an empty store: %v", err)
	}
}

func TestDefaultDir(t *testing.T) {
	t.Setenv("VMCOMPOSE_HOME", "/v")
	t.Setenv("XDG_DATA_HOME", "/x")
	t.Setenv("HOME", "/h")
	for _, c := range []struct{ home, xdg, want string }{
		{"/v", "/x", "/v"},
		{"", "/x", "/x/vmcompose"},
		{"", "", "/h/.local/share/vmcompose"},
		{"", "relative", "/h/.local/share/vmcompose"}, // the XDG spec ignores relative paths
	} {
		os.Setenv("VMCOMPOSE_HOME", c.home)
		os.Setenv("XDG_DATA_HOME", c.xdg)
		if got, err := DefaultDir(); got != c.want || err != nil {
			t.Errorf("VMCOMPOSE_HOME=%q XDG_DATA_HOME=%q: %q, %v; want %q", c.home, c.xdg, got, err, c.want)
		}
	}
}

func TestOpenRemovesStaleTempFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	stale := []string{
		filepath.Join(dir, "blobs", "sha256", tmpPrefix+"0123456789ab-42"),
		filepath.Join(dir, tmpPrefix+"index.json-42"),
	}
	for _, f := range stale {
		if err := os.WriteFile(f, []byte("half"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// While another process pulls (holding the gc lock shared), Open must
	// not touch its temporary files.
	unlock, err := s.lock(context.Background(), gcLockFile, syscall.LOCK_SH)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	if len(tempFiles(t, s)) != 2 {
		t.Fatalf("Open removed the temporary files of a running pull")
	}
	unlock()
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	if tmps := tempFiles(t, s); len(tmps) != 0 {
		t.Errorf("stale temporary files left: %v", tmps)
	}
}

func TestPlainHTTPPolicy(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "localhost:5000": true, "127.0.0.1:5000": true, "127.1.2.3": true,
		"[::1]:5000": true, "::1": true, "10.0.0.5:5000": false, "registry.lan": false,
		"foo.localhost:5000": false, "192.168.1.2": false,
	} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%q) = %v", host, got)
		}
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})
	inner := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		return &http.Response{StatusCode: 200, Body: http.NoBody, Request: r}, nil
	})
	_ = ok
	g := &plainHTTPGuard{inner: inner, insecure: map[string]bool{"registry.lan:5000": true}}
	for url, allowed := range map[string]bool{
		"http://10.0.0.5:5000/v2/":      false, // ggcr would fall back to http for RFC 1918
		"http://registry.lan/v2/":       false,
		"http://registry.lan:5000/v2/":  true,
		"http://127.0.0.2:5000/v2/":     true,
		"https://10.0.0.5:5000/v2/":     true,
		"http://example.com/redirect/x": false,
	} {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		_, err := g.RoundTrip(req)
		if (err == nil) != allowed {
			t.Errorf("%s: allowed=%v, err=%v", url, allowed, err)
		}
		if err != nil && (!errors.Is(err, ErrTerminal) || !strings.Contains(err.Error(), "plain HTTP")) {
			t.Errorf("%s: %v", url, err)
		}
	}
	// References to loopback registries and configured ones are parsed
	// insecure, so ggcr tries http://.
	o, _ := makeOptions([]Option{WithInsecureRegistries("registry.lan:5000")})
	for ref, scheme := range map[string]string{
		"127.0.0.2:5000/a":    "http",
		"localhost/a":         "http",
		"registry.lan:5000/a": "http",
		"registry.lan/a":      "https",
		"alpine":              "https",
	} {
		r, err := parseRef(ref, o)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Context().Scheme(); got != scheme {
			t.Errorf("%s: scheme %s, want %s", ref, got, scheme)
		}
	}
	if _, err := makeOptions([]Option{WithInsecureRegistries("http://x/")}); err == nil {
		t.Error("WithInsecureRegistries accepted a URL")
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestCanonicalNames(t *testing.T) {
	for in, want := range map[string]string{
		"alpine":                           "docker.io/library/alpine:latest",
		"alpine:3.20":                      "docker.io/library/alpine:3.20",
		"docker.io/library/alpine:3.20":    "docker.io/library/alpine:3.20",
		"index.docker.io/foo/bar":          "docker.io/foo/bar:latest",
		"ghcr.io/a/b:1":                    "ghcr.io/a/b:1",
		"localhost:5000/x@sha256:" + hex64: "localhost:5000/x@sha256:" + hex64,
	} {
		r, err := name.ParseReference(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := canonical(r); got != want {
			t.Errorf("canonical(%s) = %s, want %s", in, got, want)
		}
	}
}

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// Concurrent pulls of the same image: goroutines sharing a Store, goroutines
// with their own Store, and other processes (this test binary re-executed).
func TestConcurrentPulls(t *testing.T) {
	if os.Getenv("VMCOMPOSE_TEST_PULL_STORE") != "" {
		t.Skip("helper process")
	}
	host, _ := newRegistry(t, nil)
	var layers []v1.Layer
	for i := range 6 {
		layers = append(layers, layerOf(t, int64(100+i), 512<<10))
	}
	ref := host + "/concurrent:1"
	push(t, ref, imageOf(t, "linux/amd64", layers...))
	dir := t.TempDir()
	shared, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}

	var cmds []*exec.Cmd
	var outs []*strings.Builder
	for range 2 {
		cmd := exec.Command(os.Args[0], "-test.run=^TestPullHelperProcess$", "-test.count=1", "-test.v")
		cmd.Env = append(os.Environ(), "VMCOMPOSE_TEST_PULL_STORE="+dir, "VMCOMPOSE_TEST_PULL_REF="+ref)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Log(out.String())
			}
		})
		cmds = append(cmds, cmd)
		outs = append(outs, &out)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 6 {
		wg.Go(func() {
			s := shared
			if i%2 == 1 {
				var err error
				if s, err = Open(dir); err != nil {
					errs <- err
					return
				}
			}
			_, err := s.Pull(context.Background(), ref, WithPlatform("linux/amd64"), WithPolicy(PullAlways))
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for i, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Errorf("helper process: %v", err)
		}
		if !strings.Contains(outs[i].String(), "--- PASS: TestPullHelperProcess") {
			t.Errorf("helper process did not pull:\n%s", outs[i])
		}
	}
	checkStore(t, shared)
	imgs, err := shared.Images()
	if err != nil || len(imgs) != 1 {
		t.Errorf("Images() = %d, %v; want one entry", len(imgs), err)
	}
}

// TestPullHelperProcess pulls an image when run by TestConcurrentPulls.
func TestPullHelperProcess(t *testing.T) {
	dir := os.Getenv("VMCOMPOSE_TEST_PULL_STORE")
	if dir == "" {
		t.Skip("run by TestConcurrentPulls")
	}
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := s.Pull(context.Background(), os.Getenv("VMCOMPOSE_TEST_PULL_REF"), WithPlatform("linux/amd64"), WithPolicy(PullAlways)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPruneAndRemove(t *testing.T) {
	host, h := newRegistry(t, nil)
	base := layerOf(t, 1, 8192)
	a := imageOf(t, "linux/amd64", base, layerOf(t, 2, 4096))
	b := imageOf(t, "linux/amd64", base, layerOf(t, 3, 4096))
	push(t, host+"/a:1", a)
	push(t, host+"/b:1", b)
	s := openStore(t)
	ctx := context.Background()
	amd := WithPlatform("linux/amd64")
	imgA, err := s.Pull(ctx, host+"/a:1", amd)
	if err != nil {
		t.Fatal(err)
	}
	imgB, err := s.Pull(ctx, host+"/b:1", amd)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing to prune yet.
	if rep, err := s.Prune(ctx); err != nil || rep.Blobs != 0 {
		t.Fatalf("prune of a store in use: %+v, %v", rep, err)
	}
	rootfs := func(d v1.Hash) string { return filepath.Join(s.RootfsDir(), d.String()+".ext4") }
	for _, f := range []string{rootfs(imgA.Digest), rootfs(imgB.Digest), filepath.Join(s.RootfsDir(), imgB.ID.Hex+".ext4"), filepath.Join(s.RootfsDir(), "notes.txt")} {
		if err := os.WriteFile(f, []byte("ext4"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(s.Dir(), "blobs", "sha256", tmpPrefix+"dead-1"), []byte("x"), 0o644)

	if err := s.Remove(host + "/a:1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(host + "/a:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Remove: %v, want ErrNotFound", err)
	}
	// A VM boots from a's root filesystem: PruneKeep keeps it, the rest goes.
	rep, err := s.Prune(ctx, PruneKeep(map[string]bool{rootfs(imgA.Digest): true}))
	if err != nil || len(rep.Rootfs) != 0 || len(rep.KeptInUse) != 1 || rep.Blobs != 3 || rep.TempFiles != 1 {
		t.Fatalf("prune keeping a's root filesystem: %+v, %v", rep, err)
	}
	if _, err := os.Stat(rootfs(imgA.Digest)); err != nil {
		t.Fatalf("PruneKeep: %v", err)
	}
	checkStore(t, s)
	// Pulled again: its blobs come back, and a prune without the VM
	// removes them again with the root filesystem.
	if _, err := s.Pull(ctx, host+"/a:1", amd); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(host + "/a:1"); err != nil {
		t.Fatal(err)
	}
	before := blobs(t, s)
	rep, err = s.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after := blobs(t, s)
	// a's own layer, config and manifest go; the shared base stays.
	if rep.Blobs != 3 || len(before)-len(after) != 3 || rep.Bytes <= 4096 {
		t.Errorf("prune report %+v; blobs %d -> %d", rep, len(before), len(after))
	}
	baseDigest, _ := base.Digest()
	if !after[baseDigest.String()] || after[imgA.Digest.String()] || !after[imgB.Digest.String()] {
		t.Errorf("wrong blobs pruned: %v", after)
	}
	if len(rep.Rootfs) != 1 || rep.Rootfs[0] != filepath.Base(rootfs(imgA.Digest)) {
		t.Errorf("rootfs pruned: %v", rep.Rootfs)
	}
	for _, f := range []string{rootfs(imgB.Digest), filepath.Join(s.RootfsDir(), imgB.ID.Hex+".ext4"), filepath.Join(s.RootfsDir(), "notes.txt")} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("prune removed %s", f)
		}
	}
	checkStore(t, s)
	// Pulling a again downloads only what prune removed.
	h.reset()
	if _, err := s.Pull(ctx, host+"/a:1", amd); err != nil {
		t.Fatal(err)
	}
	if got := h.get("GET blob"); got != 2 {
		t.Errorf("re-pull after prune: %d blob GETs, want 2 (layer and config)", got)
	}
}

func TestImportDockerSave(t *testing.T) {
	img := imageOf(t, "linux/amd64", layerOf(t, 1, 4096), layerOf(t, 2, 2048))
	other := imageOf(t, "linux/arm64", layerOf(t, 3, 1024))
	file := filepath.Join(t.TempDir(), "save.tar")
	t1, _ := name.NewTag("example.com/app:1")
	t2, _ := name.NewTag("app:latest")
	t3, _ := name.NewTag("example.com/other:2")
	if err := tarball.MultiWriteToFile(file, map[name.Tag]v1.Image{t1: img, t2: img, t3: other}); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	imgs, err := s.Import(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 3 {
		t.Fatalf("imported %d images, want 3", len(imgs))
	}
	for ref, plat := range map[string]string{"example.com/app:1": "linux/amd64", "docker.io/library/app:latest": "linux/amd64", "example.com/other:2": "linux/arm64"} {
		got, err := s.Image(ref, WithPlatform(plat))
		if err != nil {
			t.Errorf("%s: %v", ref, err)
			continue
		}
		if got.Config.Config.Cmd[0] != "/bin/sh" || got.PulledAt.IsZero() {
			t.Errorf("%s: config %+v, pulled at %v", ref, got.Config.Config, got.PulledAt)
		}
	}
	// The config and the (compressed) layers keep their digests; the
	// manifest is rewritten by the tarball format (Docker v2 media types).
	got, _ := s.Image("example.com/app:1", WithPlatform("linux/amd64"))
	wantID, _ := img.ConfigName()
	wantLayers, _ := img.Manifest()
	gotLayers, _ := got.V1.Manifest()
	if got.ID != wantID || gotLayers == nil || gotLayers.Layers[0].Digest != wantLayers.Layers[0].Digest {
		t.Errorf("ID %s, want %s; layers %v", got.ID, wantID, gotLayers)
	}
	checkStore(t, s)
}

// writeLayoutArchive tars an OCI image layout directory.
func writeLayoutArchive(t *testing.T, dir, file string) {
	t.Helper()
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		info, _ := d.Info()
		if err := tw.WriteHeader(&tar.Header{Name: rel, Mode: 0o644, Size: info.Size(), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestImportOCIArchive(t *testing.T) {
	src := t.TempDir()
	p, err := layout.Write(src, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	single := imageOf(t, "linux/amd64", layerOf(t, 1, 4096))
	amd := imageOf(t, "linux/amd64", layerOf(t, 2, 2048))
	arm := imageOf(t, "linux/arm64", layerOf(t, 3, 2048))
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	bare := imageOf(t, "linux/amd64", layerOf(t, 4, 1024))
	if err := p.AppendImage(single, layout.WithAnnotations(map[string]string{AnnotationRefName: "example.com/single:1"})); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{AnnotationContainerdName: "example.com/multi:2", AnnotationRefName: "2"})); err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(bare, layout.WithAnnotations(map[string]string{AnnotationRefName: "1.0"})); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "oci.tar")
	writeLayoutArchive(t, src, file)

	s := openStore(t)
	var events []Event
	imgs, err := s.Import(context.Background(), file, WithPlatform("linux/arm64"), WithProgress(func(e Event) { events = append(events, e) }))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]v1.Hash{}
	for _, img := range imgs {
		got[img.Ref] = img.Digest
	}
	want := map[string]v1.Hash{"example.com/single:1": digestOf(t, single), "example.com/multi:2": digestOf(t, arm)}
	if len(got) != 2 || got["example.com/single:1"] != want["example.com/single:1"] || got["example.com/multi:2"] != want["example.com/multi:2"] {
		t.Errorf("imported %v, want %v (the bare tag 1.0 names nothing)", got, want)
	}
	var done []string
	for _, e := range events {
		if e.Kind == EventDone {
			done = append(done, e.Ref)
		}
	}
	if len(events) == 0 || len(done) != 2 {
		t.Errorf("done events for %v, want the two images", done)
	}
	checkStore(t, s)

	// Importing again writes no blob.
	before := blobs(t, s)
	events = nil
	if _, err := s.Import(context.Background(), file, WithPlatform("linux/arm64"), WithProgress(func(e Event) { events = append(events, e) })); err != nil {
		t.Fatal(err)
	}
	for _, e := range events {
		if e.Kind == EventLayerDone {
			t.Errorf("second import wrote %s", e.Digest)
		}
	}
	if len(blobs(t, s)) != len(before) {
		t.Error("second import changed the blobs")
	}
}

func TestImportRejectsCorruptBlob(t *testing.T) {
	src := t.TempDir()
	p, err := layout.Write(src, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	l := layerOf(t, 1, 4096)
	if err := p.AppendImage(imageOf(t, "linux/amd64", l), layout.WithAnnotations(map[string]string{AnnotationRefName: "example.com/x:1"})); err != nil {
		t.Fatal(err)
	}
	d, _ := l.Digest()
	blob := filepath.Join(src, "blobs", "sha256", d.Hex)
	b, _ := os.ReadFile(blob)
	b[10] ^= 0xff
	os.Chmod(blob, 0o644)
	if err := os.WriteFile(blob, b, 0o644); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "oci.tar")
	writeLayoutArchive(t, src, file)
	s := openStore(t)
	_, err = s.Import(context.Background(), file)
	if !errors.Is(err, ErrDigest) || !strings.HasPrefix(err.Error(), "importing "+file) {
		t.Fatalf("got %v, want ErrDigest", err)
	}
	if blobs(t, s)[d.String()] {
		t.Error("corrupt blob stored")
	}
	imgs, _ := s.Images()
	if len(imgs) != 0 {
		t.Errorf("images recorded: %v", imgs)
	}
	checkStore(t, s)

	if _, err := s.Import(context.Background(), "/dev/null"); !errors.Is(err, ErrTerminal) {
		t.Errorf("empty archive: %v", err)
	}
}

// Docker 25 and later save an OCI layout plus a manifest.json, and users
// often gzip it; the layout is read, so digests stay those of the source.
func TestImportDockerSaveOCIGzip(t *testing.T) {
	src := t.TempDir()
	p, err := layout.Write(src, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	img := imageOf(t, "linux/amd64", layerOf(t, 1, 4096))
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		AnnotationContainerdName: "docker.io/library/app:1", AnnotationRefName: "1"})); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "manifest.json"), []byte(`[{"Config":"blobs/sha256/x","RepoTags":["app:1"],"Layers":[]}]`), 0o644); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(t.TempDir(), "save.tar")
	writeLayoutArchive(t, src, plain)
	file := plain + ".gz"
	gzipFile(t, plain, file)

	s := openStore(t)
	imgs, err := s.Import(context.Background(), file)
	if err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].Ref != "docker.io/library/app:1" || imgs[0].Digest != digestOf(t, img) {
		t.Fatalf("imported %+v", imgs)
	}
	got, err := s.Image("app:1")
	if err != nil || got.Digest != digestOf(t, img) || got.Size <= 4096 {
		t.Errorf("Image(app:1) = %s size %d, %v", got.Digest, got.Size, err)
	}
	checkStore(t, s)
}

func gzipFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(out)
	if _, err := io.Copy(zw, in); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
