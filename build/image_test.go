package build

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/vmcompose/vmcompose/internal/testenv"
	"github.com/vmcompose/vmcompose/internal/testimage"
	"github.com/vmcompose/vmcompose/oci"
)

func openStore(t *testing.T) *oci.Store {
	t.Helper()
	s, err := oci.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// reports collects what EnsureImage reports.
type reports struct {
	mu    sync.Mutex
	lines []string
}

func (r *reports) add(s string) { r.mu.Lock(); r.lines = append(r.lines, s); r.mu.Unlock() }

func (r *reports) get() []string { r.mu.Lock(); defer r.mu.Unlock(); return slices.Clone(r.lines) }

// TestEnsureImageWithMmdebstrap makes the builder image for real (about a
// minute): its config, buildah and crun in its one layer, the work folder
// gone; a second call is a no-op; an exported archive named by ImageEnv
// gives another store the same image without mmdebstrap.
func TestEnsureImageWithMmdebstrap(t *testing.T) {
	testenv.LookPath(t, "mmdebstrap", "apt-get install mmdebstrap")
	t.Setenv(ImageEnv, "")
	ctx := context.Background()
	store := openStore(t)
	var rep reports
	start := time.Now()
	img, err := EnsureImage(ctx, store, rep.add)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("made %s (%d bytes) in %s", img.Ref, img.Size, time.Since(start).Round(time.Second))
	if got := rep.get(); !slices.Equal(got, []string{MakingMessage}) {
		t.Errorf("reported %q, want the one line %q", got, MakingMessage)
	}
	checkBuilderImage(t, img)
	if _, err := os.Stat(filepath.Join(store.Dir(), "builder.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the work folder is still there: %v", err)
	}

	start = time.Now()
	again, err := EnsureImage(ctx, store, rep.add)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 2*time.Second || again.Digest != img.Digest || len(rep.get()) != 1 {
		t.Errorf("second EnsureImage: %s, digest %s (first %s), reports %q", d, again.Digest, img.Digest, rep.get())
	}

	archive := filepath.Join(t.TempDir(), "builder.tar")
	if err := ExportImage(ctx, store, archive); err != nil {
		t.Fatal(err)
	}
	t.Setenv(ImageEnv, archive)
	other := openStore(t)
	start = time.Now()
	imported, err := EnsureImage(ctx, other, rep.add)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("imported from %s in %s", ImageEnv, time.Since(start).Round(time.Millisecond))
	if imported.Ref != ImageRef() || imported.ID != img.ID || len(rep.get()) != 1 {
		t.Errorf("imported %s config %s (made %s), reports %q", imported.Ref, imported.ID, img.ID, rep.get())
	}
	checkBuilderImage(t, imported)
}

// checkBuilderImage checks the config and that the one layer holds
// buildah and crun but not the host's resolv.conf and hostname.
func checkBuilderImage(t *testing.T, img oci.Image) {
	t.Helper()
	c := img.Config.Config
	if img.Ref != ImageRef() || !slices.Equal(c.Env, imageConfig.Env) || !slices.Equal(c.Cmd, imageConfig.Cmd) || c.Labels[LabelRecipe] != RecipeText() {
		t.Errorf("image %s, config %+v", img.Ref, c)
	}
	layers, err := img.V1.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("%d layers, %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	want := map[string]bool{"usr/bin/buildah": false, "usr/bin/crun": false}
	leaked := []string{"etc/resolv.conf", "etc/hostname"} // the host's
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		n := strings.TrimPrefix(h.Name, "./")
		if slices.Contains(leaked, n) {
			t.Errorf("the layer has %s", n)
		}
		if _, ok := want[n]; ok && h.Typeflag == tar.TypeReg && h.Mode&0o111 != 0 {
			want[n] = true
		}
	}
	for n, found := range want {
		if !found {
			t.Errorf("no executable %s in the layer", n)
		}
	}
}

// fakeMmdebstrap puts a stand-in for mmdebstrap first on PATH: it runs
// script (sh) with $target the last argument.
func fakeMmdebstrap(t *testing.T, script string) {
	t.Helper()
	dir := t.TempDir()
	sh := "#!/bin/sh\nfor a; do target=$a; done\n" + script
	if err := os.WriteFile(filepath.Join(dir, "mmdebstrap"), []byte(sh), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv(ImageEnv, "")
}

// TestEnsureImageMakesItOnce: two concurrent calls on an empty store run
// mmdebstrap once (with TMPDIR in the store, not /tmp) and return the
// same image.
func TestEnsureImageMakesItOnce(t *testing.T) {
	dir := t.TempDir()
	log, rootfs := filepath.Join(dir, "runs"), filepath.Join(dir, "rootfs.tar")
	tarStream := testimage.Tar(t, []testimage.Entry{testimage.File("usr/bin/buildah", 0o755, "x")})
	if err := os.WriteFile(rootfs, tarStream, 0o644); err != nil {
		t.Fatal(err)
	}
	fakeMmdebstrap(t, `echo "$TMPDIR" >> `+log+`
sleep 0.3
cp `+rootfs+` "$target"
`)
	store := openStore(t)
	var rep reports
	var wg sync.WaitGroup
	imgs := make([]oci.Image, 2)
	errs := make([]error, 2)
	for i := range imgs {
		wg.Go(func() { imgs[i], errs[i] = EnsureImage(context.Background(), store, rep.add) })
	}
	wg.Wait()
	if errs[0] != nil || errs[1] != nil {
		t.Fatal(errs)
	}
	if imgs[0].Digest != imgs[1].Digest || imgs[0].Ref != ImageRef() {
		t.Errorf("got %s %s and %s %s", imgs[0].Ref, imgs[0].Digest, imgs[1].Ref, imgs[1].Digest)
	}
	runs, err := os.ReadFile(log)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(store.Dir(), "builder.tmp") + "\n"; string(runs) != want || len(rep.get()) != 1 {
		t.Errorf("mmdebstrap ran with TMPDIR %q, want once with %q; reports %q", runs, want, rep.get())
	}
}

// TestEnsureImageMmdebstrapFails: the error ends with mmdebstrap's last
// lines; nothing is stored and the work folder is gone.
func TestEnsureImageMmdebstrapFails(t *testing.T) {
	fakeMmdebstrap(t, `for i in $(seq 1 30); do echo "I: step $i"; done
echo "E: apt-get update failed" >&2
exit 1
`)
	store := openStore(t)
	_, err := EnsureImage(context.Background(), store, nil)
	if err == nil || !strings.Contains(err.Error(), "I: step 30\n  E: apt-get update failed") || strings.Contains(err.Error(), "step 20\n") {
		t.Fatalf("error: %v", err)
	}
	if _, err := store.Image(ImageRef()); !errors.Is(err, oci.ErrNotFound) {
		t.Errorf("image after a failure: %v", err)
	}
	if _, err := os.Stat(filepath.Join(store.Dir(), "builder.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the work folder is still there: %v", err)
	}
}

// TestEnsureImageWithoutMmdebstrap: the error says how to install it.
func TestEnsureImageWithoutMmdebstrap(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv(ImageEnv, "")
	_, err := EnsureImage(context.Background(), openStore(t), nil)
	want := "making the builder image: mmdebstrap is not installed (apt-get install mmdebstrap; make setup installs it)"
	if err == nil || err.Error() != want {
		t.Fatalf("error %v, want %q", err, want)
	}
}

// TestEnsureImageImportsAnyName: an archive of one image under another
// name is recorded as ImageRef; one labelled with another recipe is
// refused.
func TestEnsureImageImportsAnyName(t *testing.T) {
	img := testimage.Image(t, []testimage.Entry{testimage.File("usr/bin/buildah", 0o755, "x")})
	archive := writeArchive(t, "example.local/builder:old", img)
	t.Setenv(ImageEnv, archive)
	store := openStore(t)
	var rep reports
	got, err := EnsureImage(context.Background(), store, rep.add)
	if err != nil {
		t.Fatal(err)
	}
	if got.Ref != ImageRef() || len(rep.get()) != 0 {
		t.Errorf("recorded as %s, reports %q", got.Ref, rep.get())
	}

	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config.Labels = map[string]string{LabelRecipe: "mmdebstrap --variant=minbase bookworm"}
	stale, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(ImageEnv, writeArchive(t, ImageRef(), stale))
	_, err = EnsureImage(context.Background(), openStore(t), nil)
	if err == nil || !strings.Contains(err.Error(), `was made by "mmdebstrap --variant=minbase bookworm"`) {
		t.Errorf("stale archive: %v", err)
	}
}

func writeArchive(t *testing.T, ref string, img v1.Image) string {
	t.Helper()
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "img.tar")
	if err := tarball.WriteToFile(path, tag, img); err != nil {
		t.Fatal(err)
	}
	return path
}
