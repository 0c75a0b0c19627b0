package oci

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

func pushIndex(t *testing.T, ref string, imgs map[string]v1.Image) {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for plat, img := range imgs {
		p, err := v1.ParsePlatform(plat)
		if err != nil {
			t.Fatal(err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: p}})
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx); err != nil {
		t.Fatal(err)
	}
}

func TestPullMultiPlatformIndex(t *testing.T) {
	host, _ := newRegistry(t, nil)
	amd := imageOf(t, "linux/amd64", layerOf(t, 1, 2048))
	arm := imageOf(t, "linux/arm64", layerOf(t, 2, 2048))
	armv7 := imageOf(t, "linux/arm/v7", layerOf(t, 3, 2048))
	ref := host + "/multi:1"
	pushIndex(t, ref, map[string]v1.Image{"linux/amd64": amd, "linux/arm64": arm, "linux/arm/v7": armv7})
	s := openStore(t)
	ctx := context.Background()

	host0 := map[string]v1.Image{"amd64": amd, "arm64": arm}[runtime.GOARCH]
	if host0 != nil {
		got, err := s.Pull(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if got.Digest != digestOf(t, host0) {
			t.Errorf("default platform: got %s, want the linux/%s manifest %s", got.Digest, runtime.GOARCH, digestOf(t, host0))
		}
	}
	for plat, want := range map[string]v1.Image{"linux/arm64": arm, "linux/arm/v7": armv7, "linux/amd64": amd} {
		got, err := s.Pull(ctx, ref, WithPlatform(plat))
		if err != nil {
			t.Fatal(err)
		}
		if got.Digest != digestOf(t, want) || got.Platform.String() != plat {
			t.Errorf("%s: got %s (%s), want %s", plat, got.Digest, got.Platform, digestOf(t, want))
		}
		if got.Ref != ref {
			t.Errorf("Ref = %q, want %q", got.Ref, ref)
		}
		// Lookup without network honours the platform too.
		img, err := s.Image(ref, WithPlatform(plat))
		if err != nil || img.Digest != got.Digest {
			t.Errorf("Image(%s, %s) = %v, %v", ref, plat, img.Digest, err)
		}
	}
	_, err := s.Pull(ctx, ref, WithPlatform("linux/s390x"))
	if !errors.Is(err, ErrPlatform) || !errors.Is(err, ErrTerminal) || !strings.Contains(err.Error(), "linux/arm64") {
		t.Errorf("missing platform: got %v, want ErrPlatform listing the platforms", err)
	}
	if _, err := s.Pull(ctx, ref, WithPlatform("nonsense")); err == nil {
		t.Error("WithPlatform(nonsense) accepted")
	}
	imgs, err := s.Images()
	if err != nil || len(imgs) != 3 {
		t.Fatalf("Images() = %d images, %v; want 3 (one per platform)", len(imgs), err)
	}
	checkStore(t, s)
}

func TestPullSingleImageWrongPlatform(t *testing.T) {
	host, _ := newRegistry(t, nil)
	ref := host + "/s390x:1"
	push(t, ref, imageOf(t, "linux/s390x", layerOf(t, 1, 1024)))
	s := openStore(t)
	_, err := s.Pull(context.Background(), ref, WithPlatform("linux/arm64"))
	if !errors.Is(err, ErrPlatform) {
		t.Fatalf("got %v, want ErrPlatform", err)
	}
	if _, err := s.Pull(context.Background(), ref, WithPlatform("linux/s390x")); err != nil {
		t.Fatal(err)
	}
}

func TestPullSharesBlobs(t *testing.T) {
	host, h := newRegistry(t, nil)
	base := []v1.Layer{layerOf(t, 10, 4096), layerOf(t, 11, 4096)}
	a := imageOf(t, "linux/amd64", append(base, layerOf(t, 12, 1024))...)
	b := imageOf(t, "linux/amd64", append(base, layerOf(t, 13, 1024))...)
	push(t, host+"/a:1", a)
	push(t, host+"/b:1", b)
	// The same base under a second registry: dedup is by digest, not by name.
	host2, h2 := newRegistry(t, nil)
	push(t, host2+"/c:1", imageOf(t, "linux/amd64", base...))
	h.reset()
	h2.reset()

	s := openStore(t)
	ctx := context.Background()
	var events []Event
	var mu sync.Mutex
	sink := WithProgress(func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() })
	for _, ref := range []string{host + "/a:1", host + "/b:1", host2 + "/c:1"} {
		if _, err := s.Pull(ctx, ref, WithPlatform("linux/amd64"), sink); err != nil {
			t.Fatal(err)
		}
	}
	for d, n := range h.blobs {
		if n != 1 {
			t.Errorf("blob %s fetched %d times", d, n)
		}
	}
	// a: 3 layers + config; b: 1 layer + config; c (second registry): config only.
	if got := h.get("GET blob"); got != 6 {
		t.Errorf("GET blob requests = %d, want 6", got)
	}
	if got := h2.get("GET blob"); got != 1 {
		t.Errorf("second registry: GET blob requests = %d, want 1 (config only)", got)
	}
	present := 0
	for _, e := range events {
		if e.Kind == EventLayerPresent {
			present++
		}
	}
	if present != 4 {
		t.Errorf("layer-present events = %d, want 4", present)
	}

	// Pulling again (policy always) fetches manifests but no blob.
	h.reset()
	for _, ref := range []string{host + "/a:1", host + "/b:1"} {
		if _, err := s.Pull(ctx, ref, WithPlatform("linux/amd64"), WithPolicy(PullAlways)); err != nil {
			t.Fatal(err)
		}
	}
	if got := h.get("GET blob"); got != 0 {
		t.Errorf("second pull: GET blob requests = %d, want 0", got)
	}
	// Unchanged in the registry: one HEAD each, no GET (Docker Hub counts
	// GETs against its rate limit).
	if got, head := h.get("GET manifest"), h.get("HEAD manifest"); got != 0 || head != 2 {
		t.Errorf("second pull: %d manifest GETs, %d HEADs; want 0 and 2", got, head)
	}
	checkStore(t, s)
}

func TestPullProgressEvents(t *testing.T) {
	host, _ := newRegistry(t, nil)
	ref := host + "/p:1"
	img := imageOf(t, "linux/amd64", layerOf(t, 1, 2<<20), layerOf(t, 2, 1024))
	push(t, ref, img)
	s := openStore(t)
	var kinds []string
	var last Event
	_, err := s.Pull(context.Background(), ref, WithPlatform("linux/amd64"), WithJobs(1), WithProgress(func(e Event) {
		kinds = append(kinds, string(e.Kind))
		last = e
		b, err := json.Marshal(e)
		if err != nil || !strings.Contains(string(b), `"kind":"`+string(e.Kind)+`"`) {
			t.Errorf("json: %s, %v", b, err)
		}
	}))
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(kinds, " ")
	if !strings.HasPrefix(got, "resolved layer-started layer-progress") || !strings.HasSuffix(got, "layer-done done") {
		t.Errorf("events: %s", got)
	}
	if last.Kind != EventDone || last.Digest != digestOf(t, img).String() || last.Current == 0 || last.Ref != ref {
		t.Errorf("last event %+v", last)
	}
}

// failFirst makes the first len(codes) manifest GETs answer with codes.
func failFirst(codes ...int) (func(http.Handler) http.Handler, *atomic.Int32) {
	var n atomic.Int32
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/") {
				i := int(n.Add(1)) - 1
				if i < len(codes) {
					w.WriteHeader(codes[i])
					return
				}
			}
			next.ServeHTTP(w, r)
		})
	}, &n
}

func TestPullRetries5xxAnd429(t *testing.T) {
	mw, attempts := failFirst(http.StatusInternalServerError, http.StatusTooManyRequests)
	host, _ := newRegistry(t, mw)
	ref := host + "/retry:1"
	push(t, ref, imageOf(t, "linux/amd64", layerOf(t, 1, 1024)))
	attempts.Store(0)
	s := openStore(t)
	if _, err := s.Pull(context.Background(), ref, WithPlatform("linux/amd64"), fastRetry); err != nil {
		t.Fatal(err)
	}
	if got := attempts.Load(); got != 3 {
		t.Errorf("manifest attempts = %d, want 3 (500, 429, 200)", got)
	}
	checkStore(t, s)
}

func TestPullUnknownImageIsTerminal(t *testing.T) {
	host, h := newRegistry(t, nil)
	push(t, host+"/nope:other", imageOf(t, "linux/amd64", layerOf(t, 1, 1024)))
	h.reset()
	s := openStore(t)
	ref := host + "/nope:1"
	_, err := s.Pull(context.Background(), ref, fastRetry)
	want := "pulling " + ref + ": manifest unknown (404): check the image name and tag"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
	_, err = s.Pull(context.Background(), host+"/nothing/here:1", fastRetry)
	if want := "pulling " + host + "/nothing/here:1: repository unknown (404): check the image name and tag"; err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
	h.reset()
	_, err = s.Pull(context.Background(), ref, fastRetry)
	if !errors.Is(err, ErrNotFound) || !errors.Is(err, ErrTerminal) {
		t.Errorf("%v: not ErrNotFound and ErrTerminal", err)
	}
	if got := h.get("GET manifest"); got != 1 {
		t.Errorf("manifest attempts = %d, want 1 (no retry on 404)", got)
	}
}

func TestPullDeniedIsTerminal(t *testing.T) {
	mw, attempts := failFirst(http.StatusForbidden, http.StatusForbidden, http.StatusForbidden)
	host, _ := newRegistry(t, mw)
	ref := host + "/denied:1"
	push(t, ref, imageOf(t, "linux/amd64", layerOf(t, 1, 1024)))
	attempts.Store(0)
	_, err := openStore(t).Pull(context.Background(), ref, fastRetry)
	if !errors.Is(err, ErrUnauthorized) || !errors.Is(err, ErrTerminal) || !strings.Contains(err.Error(), "(403)") {
		t.Fatalf("got %v, want a 403 ErrUnauthorized", err)
	}
	if attempts.Load() != 1 {
		t.Errorf("attempts = %d, want 1", attempts.Load())
	}
}

// breakBlob serves a damaged body for GETs of blob digest d.
func breakBlob(d *v1.Hash, damage func(w http.ResponseWriter, r *http.Request, body []byte), count *atomic.Int32) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodGet || d.Hex == "" || !strings.HasSuffix(r.URL.Path, "/blobs/"+d.String()) {
				next.ServeHTTP(w, r)
				return
			}
			count.Add(1)
			rec := &recorder{header: http.Header{}}
			next.ServeHTTP(rec, r)
			damage(w, r, rec.body)
		})
	}
}

type recorder struct {
	header http.Header
	body   []byte
	code   int
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) WriteHeader(code int)        { r.code = code }
func (r *recorder) Write(p []byte) (int, error) { r.body = append(r.body, p...); return len(p), nil }

func TestPullTruncatedBlob(t *testing.T) {
	var target v1.Hash
	var count atomic.Int32
	host, _ := newRegistry(t, breakBlob(&target, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Length", itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write(body[:len(body)/2]) // the server hangs up half way
	}, &count))
	good := host + "/good:1"
	push(t, good, imageOf(t, "linux/amd64", layerOf(t, 1, 1024)))
	l := layerOf(t, 2, 64<<10)
	target, _ = l.Digest()
	ref := host + "/truncated:1"
	push(t, ref, imageOf(t, "linux/amd64", layerOf(t, 3, 1024), l))

	s := openStore(t)
	ctx := context.Background()
	if _, err := s.Pull(ctx, good, WithPlatform("linux/amd64")); err != nil {
		t.Fatal(err)
	}
	before := readIndexFile(t, s)
	_, err := s.Pull(ctx, ref, WithPlatform("linux/amd64"), fastRetry)
	if err == nil {
		t.Fatal("truncated blob accepted")
	}
	if !strings.HasPrefix(err.Error(), "pulling "+ref+": layer "+target.String()) {
		t.Errorf("error %q does not name the image and layer", err)
	}
	if got := count.Load(); got != 3 {
		t.Errorf("blob attempts = %d, want 3 (a broken transfer is retried)", got)
	}
	if blobs(t, s)[target.String()] {
		t.Error("the truncated blob is in the store")
	}
	if after := readIndexFile(t, s); after != before {
		t.Errorf("index.json changed:\n%s\n---\n%s", before, after)
	}
	if _, err := s.Image(ref, WithPlatform("linux/amd64")); !errors.Is(err, ErrNotFound) {
		t.Errorf("Image after failed pull: %v, want ErrNotFound", err)
	}
	checkStore(t, s)
}

func itoa(n int) string { return strconv.Itoa(n) }

func TestPullWrongDigest(t *testing.T) {
	var target v1.Hash
	var count atomic.Int32
	host, _ := newRegistry(t, breakBlob(&target, func(w http.ResponseWriter, r *http.Request, body []byte) {
		bad := append([]byte(nil), body...)
		bad[len(bad)/2] ^= 0xff // same size, other bytes
		w.Header().Set("Content-Length", itoa(len(bad)))
		w.Write(bad)
	}, &count))
	l := layerOf(t, 2, 64<<10)
	target, _ = l.Digest()
	ref := host + "/corrupt:1"
	push(t, ref, imageOf(t, "linux/amd64", l))
	s := openStore(t)
	before := readIndexFile(t, s)
	_, err := s.Pull(context.Background(), ref, WithPlatform("linux/amd64"), fastRetry)
	if !errors.Is(err, ErrDigest) || !errors.Is(err, ErrTerminal) {
		t.Fatalf("got %v, want ErrDigest", err)
	}
	if count.Load() != 1 {
		t.Errorf("attempts = %d, want 1 (a digest mismatch is not retried)", count.Load())
	}
	if blobs(t, s)[target.String()] || readIndexFile(t, s) != before {
		t.Error("the corrupt blob or its image was recorded")
	}
	checkStore(t, s)
}

func TestPullCancelLeavesNothing(t *testing.T) {
	var target v1.Hash
	var count atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	host, _ := newRegistry(t, breakBlob(&target, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Length", itoa(len(body)))
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		cancel()
		time.Sleep(200 * time.Millisecond)
		w.Write(body[len(body)/2:])
	}, &count))
	l := layerOf(t, 2, 1<<20)
	target, _ = l.Digest()
	ref := host + "/cancel:1"
	push(t, ref, imageOf(t, "linux/amd64", l))
	s := openStore(t)
	_, err := s.Pull(ctx, ref, WithPlatform("linux/amd64"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if len(blobs(t, s)) != 0 {
		t.Errorf("blobs left after cancel: %v", blobs(t, s))
	}
	checkStore(t, s)
}

func TestPullTokenAuth(t *testing.T) {
	const user, pass, token = "alice", "s3cret-pass", "tok-123"
	var tokenRequests, unauthorized atomic.Int32
	var realm string
	mw := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/token" {
				u, p, ok := r.BasicAuth()
				if !ok || u != user || p != pass {
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				tokenRequests.Add(1)
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(`{"token":"` + token + `"}`))
				return
			}
			if r.Header.Get("Authorization") != "Bearer "+token {
				unauthorized.Add(1)
				w.Header().Set("WWW-Authenticate", `Bearer realm="`+realm+`",service="test"`)
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	host, _ := newRegistry(t, mw)
	realm = "http://" + host + "/token"
	ref := host + "/private:1"
	img := imageOf(t, "linux/amd64", layerOf(t, 1, 1024))
	r, _ := name.ParseReference(ref)
	if err := remote.Write(r, img, remote.WithAuth(&authn.Basic{Username: user, Password: pass})); err != nil {
		t.Fatal(err)
	}
	s := openStore(t)
	ctx := context.Background()

	// Without credentials: a clear, terminal 401.
	_, err := s.Pull(ctx, ref, WithPlatform("linux/amd64"), WithKeychain(authn.NewMultiKeychain()), fastRetry)
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("anonymous pull: got %v, want ErrUnauthorized", err)
	}
	// Wrong password: the error must not print it.
	_, err = s.Pull(ctx, ref, WithPlatform("linux/amd64"), WithAuth(&authn.Basic{Username: user, Password: "wrong-pass"}), fastRetry)
	if err == nil || strings.Contains(err.Error(), "wrong-pass") {
		t.Fatalf("wrong password: got %v", err)
	}

	kc := keychainFunc(func(res authn.Resource) (authn.Authenticator, error) {
		if res.RegistryStr() == host {
			return &authn.Basic{Username: user, Password: pass}, nil
		}
		return authn.Anonymous, nil
	})
	tokenRequests.Store(0)
	got, err := s.Pull(ctx, ref, WithPlatform("linux/amd64"), WithKeychain(kc))
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != digestOf(t, img) || tokenRequests.Load() == 0 || unauthorized.Load() == 0 {
		t.Errorf("digest %s, token requests %d, 401s %d", got.Digest, tokenRequests.Load(), unauthorized.Load())
	}
	checkStore(t, s)
}

type keychainFunc func(authn.Resource) (authn.Authenticator, error)

func (f keychainFunc) Resolve(r authn.Resource) (authn.Authenticator, error) { return f(r) }

func TestPullZstdAndUncompressedLayers(t *testing.T) {
	host, _ := newRegistry(t, nil)
	zl, err := tarball.LayerFromOpener(tarOpener(t, 7, 32<<10), tarball.WithCompression("zstd"), tarball.WithMediaType(types.OCILayerZStd))
	if err != nil {
		t.Fatal(err)
	}
	if mt, _ := zl.MediaType(); mt != types.OCILayerZStd {
		t.Fatalf("media type %s", mt)
	}
	ul := static.NewLayer(tarBytes(t, 8, 16<<10), types.OCIUncompressedLayer)
	gl := layerOf(t, 9, 4096)
	ref := host + "/zstd:1"
	img := imageOf(t, "linux/amd64", zl, ul, gl)
	push(t, ref, img)
	s := openStore(t)
	got, err := s.Pull(context.Background(), ref, WithPlatform("linux/amd64"))
	if err != nil {
		t.Fatal(err)
	}
	layers, err := got.V1.Layers()
	if err != nil || len(layers) != 3 {
		t.Fatalf("%d layers, %v", len(layers), err)
	}
	for i, want := range []types.MediaType{types.OCILayerZStd, types.OCIUncompressedLayer, types.OCILayer} {
		if mt, _ := layers[i].MediaType(); mt != want {
			t.Errorf("layer %d: %s, want %s", i, mt, want)
		}
	}
	checkStore(t, s) // validate.Image decompresses every layer and checks diff IDs
}

func TestPullPolicies(t *testing.T) {
	host, h := newRegistry(t, nil)
	ref := host + "/policy:1"
	push(t, ref, imageOf(t, "linux/amd64", layerOf(t, 1, 1024)))
	s := openStore(t)
	ctx := context.Background()
	amd := WithPlatform("linux/amd64")
	h.reset()

	_, err := s.Pull(ctx, ref, amd, WithPolicy(PullNever))
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "pull policy is never") {
		t.Fatalf("never + missing: got %v", err)
	}
	if n := h.total(); n != 0 {
		t.Errorf("never: %d requests", n)
	}
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	if _, err := s.Pull(ctx, ref, amd, WithPolicy(PullMissing)); err != nil {
		t.Fatal(err)
	}
	h.reset()
	for _, p := range []PullPolicy{PullMissing, PullNever, PullDaily, ""} {
		img, err := s.Pull(ctx, ref, amd, WithPolicy(p))
		if err != nil {
			t.Fatal(err)
		}
		if !img.PulledAt.Equal(now) {
			t.Errorf("PulledAt = %v, want %v", img.PulledAt, now)
		}
	}
	if n := h.total(); n != 0 {
		t.Errorf("missing/never/daily with a fresh image: %d requests, want 0", n)
	}
	now = now.Add(25 * time.Hour)
	img, err := s.Pull(ctx, ref, amd, WithPolicy(PullDaily))
	if err != nil {
		t.Fatal(err)
	}
	if h.get("HEAD manifest") != 1 || !img.PulledAt.Equal(now) {
		t.Errorf("daily after 25h: %d manifest HEADs, pulled at %v", h.get("HEAD manifest"), img.PulledAt)
	}
	if _, err := s.Pull(ctx, ref, amd, WithPolicy(PullAlways)); err != nil || h.get("HEAD manifest") != 2 || h.get("GET manifest") != 0 {
		t.Errorf("always: %v, %d manifest HEADs, %d GETs", err, h.get("HEAD manifest"), h.get("GET manifest"))
	}
	// The tag moves: always pulls the new image.
	newer := imageOf(t, "linux/amd64", layerOf(t, 5, 1024))
	push(t, ref, newer)
	h.reset()
	img, err = s.Pull(ctx, ref, amd, WithPolicy(PullAlways))
	if err != nil || img.Digest != digestOf(t, newer) || h.get("GET manifest") != 1 {
		t.Errorf("always after the tag moved: %v, %s, %d manifest GETs", err, img.Digest, h.get("GET manifest"))
	}
	if imgs, _ := s.Images(); len(imgs) != 1 {
		t.Errorf("%d images recorded, want 1 (the tag's new image replaces the old)", len(imgs))
	}
	if _, err := ParsePullPolicy("sometimes"); err == nil {
		t.Error("ParsePullPolicy(sometimes) accepted")
	}
	if p, err := ParsePullPolicy("if_not_present"); p != PullMissing || err != nil {
		t.Errorf("ParsePullPolicy(if_not_present) = %q, %v", p, err)
	}
}

func TestPullVariantAndDigestReference(t *testing.T) {
	host, h := newRegistry(t, nil)
	// The arm/v7 config omits the variant, as many do; only the index has it.
	armv7 := imageOf(t, "linux/arm", layerOf(t, 1, 1024))
	amd := imageOf(t, "linux/amd64", layerOf(t, 2, 1024))
	ref := host + "/variant:1"
	pushIndex(t, ref, map[string]v1.Image{"linux/arm/v7": armv7, "linux/amd64": amd})
	s := openStore(t)
	ctx := context.Background()
	got, err := s.Pull(ctx, ref, WithPlatform("linux/arm/v7"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Platform.String() != "linux/arm/v7" || got.Digest != digestOf(t, armv7) {
		t.Errorf("got %s %s", got.Platform, got.Digest)
	}
	h.reset()
	if _, err := s.Pull(ctx, ref, WithPlatform("linux/arm/v7")); err != nil || h.get("GET manifest") != 0 {
		t.Errorf("second pull with policy missing: %v, %d manifest GETs, want 0", err, h.get("GET manifest"))
	}

	// A digest reference (of the index) is recorded under that digest.
	r, _ := name.ParseReference(ref)
	desc, err := remote.Head(r)
	if err != nil {
		t.Fatal(err)
	}
	byDigest := host + "/variant@" + desc.Digest.String()
	got, err = s.Pull(ctx, byDigest, WithPlatform("linux/amd64"))
	if err != nil {
		t.Fatal(err)
	}
	if got.Ref != byDigest || got.Digest != digestOf(t, amd) {
		t.Errorf("got %s %s", got.Ref, got.Digest)
	}
	h.reset()
	if _, err := s.Pull(ctx, byDigest, WithPlatform("linux/amd64"), WithPolicy(PullAlways)); err != nil || h.total() != 0 {
		t.Errorf("digest reference already present, policy always: %v, %d requests; want none", err, h.total())
	}
	checkImages(t, s)
}

func TestPullRetriesStalledLayer(t *testing.T) {
	var target v1.Hash
	var count atomic.Int32
	host, _ := newRegistry(t, breakBlob(&target, func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Length", itoa(len(body)))
		if count.Load() == 1 {
			w.Write(body[:len(body)/2])
			w.(http.Flusher).Flush()
			select { // stall; the client gives up first
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
			return
		}
		w.Write(body)
	}, &count))
	l := layerOf(t, 2, 256<<10)
	target, _ = l.Digest()
	ref := host + "/stall:1"
	push(t, ref, imageOf(t, "linux/amd64", l))
	s := openStore(t)
	stall := func(o *options) error { o.stall = 200 * time.Millisecond; return nil }
	start := time.Now()
	if _, err := s.Pull(context.Background(), ref, WithPlatform("linux/amd64"), fastRetry, stall); err != nil {
		t.Fatal(err)
	}
	if count.Load() != 2 || time.Since(start) > 1500*time.Millisecond {
		t.Errorf("%d attempts in %s, want 2 well before the stalled response ends", count.Load(), time.Since(start))
	}
	checkStore(t, s)
}

func TestPullRepairsMissingBlob(t *testing.T) {
	host, h := newRegistry(t, nil)
	ref := host + "/repair:1"
	l := layerOf(t, 1, 4096)
	push(t, ref, imageOf(t, "linux/amd64", l, layerOf(t, 2, 4096)))
	s := openStore(t)
	ctx := context.Background()
	if _, err := s.Pull(ctx, ref, WithPlatform("linux/amd64")); err != nil {
		t.Fatal(err)
	}
	d, _ := l.Digest()
	if err := os.Remove(s.blobPath(d)); err != nil {
		t.Fatal(err)
	}
	h.reset()
	if _, err := s.Pull(ctx, ref, WithPlatform("linux/amd64")); err != nil {
		t.Fatal(err)
	}
	if h.blobs[d.String()] != 1 || h.get("GET blob") != 1 {
		t.Errorf("blob GETs %v, want only the missing layer", h.blobs)
	}
	checkStore(t, s)
}
