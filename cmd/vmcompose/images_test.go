package main_test

import (
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

// vmc runs vmcompose in dir with its own store and state, returning
// stdout and stderr, and failing the test on a non-zero exit.
func vmc(t *testing.T, home, dir string, args ...string) (string, string) {
	t.Helper()
	stdout, stderr, code := output(t, vmcompose(dir, []string{"VMCOMPOSE_HOME=" + home, "XDG_STATE_HOME=" + filepath.Join(home, "state")}, args...))
	if code != 0 {
		t.Fatalf("vmcompose %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
	}
	return stdout, stderr
}

// TestPullImagesPrune pulls a busybox image used by two services from an
// in-process registry over real HTTP, then checks the store, the shared
// root filesystem and prune.
func TestPullImagesPrune(t *testing.T) {
	var blobGets atomic.Int64
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			blobGets.Add(1)
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	ref := strings.TrimPrefix(srv.URL, "http://") + "/test/busybox:1"
	tag, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, testimage.Busybox(t)); err != nil {
		t.Fatal(err)
	}

	home, dir := t.TempDir(), t.TempDir()
	compose := "services:\n  a: {image: " + ref + "}\n  b: {image: " + ref + "}\n  c: {build: .}\n"
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(compose), 0o644); err != nil {
		t.Fatal(err)
	}
	_, progress := vmc(t, home, dir, "--progress", "plain", "pull")
	if !strings.Contains(progress, ref+": root filesystem built in") || strings.Count(progress, "root filesystem built") != 1 {
		t.Errorf("pull progress:\n%s", progress)
	}
	firstGets := blobGets.Load()
	if firstGets == 0 {
		t.Fatal("no blob was fetched")
	}

	out, _ := vmc(t, home, dir, "images", "--format", "json")
	var rows []struct {
		Service, Ref, Digest, Status string
		Rootfs                       bool
	}
	dec := json.NewDecoder(strings.NewReader(out))
	for dec.More() {
		var r struct {
			Service, Ref, Digest, Status string
			Rootfs                       bool
		}
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		rows = append(rows, r)
	}
	if len(rows) != 3 || !rows[0].Rootfs || !rows[1].Rootfs || rows[0].Digest != rows[1].Digest || rows[2].Status != "not built" || !strings.HasSuffix(rows[2].Ref, "-"+rows[2].Service) {
		t.Fatalf("images:\n%s", out)
	}
	ext4 := filepath.Join(home, "rootfs", strings.TrimPrefix(rows[0].Digest, "sha256:")+".ext4")
	if out, err := exec.Command("e2fsck", "-fn", ext4).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn %s: %v\n%s", ext4, err, out)
	}

	// Pulling again with the missing policy contacts nothing and builds
	// nothing; the always policy downloads no blob it already has.
	_, progress = vmc(t, home, dir, "--progress", "plain", "pull", "--policy", "missing")
	if strings.Contains(progress, "filesystem built") || blobGets.Load() != firstGets {
		t.Errorf("second pull rebuilt or refetched (%d blob GETs, then %d):\n%s", firstGets, blobGets.Load(), progress)
	}
	vmc(t, home, dir, "--progress", "quiet", "pull")
	if blobGets.Load() != firstGets {
		t.Errorf("pull --policy always fetched blobs it had: %d then %d", firstGets, blobGets.Load())
	}

	vmc(t, home, dir, "image", "rm", ref)
	out, _ = vmc(t, home, dir, "image", "prune")
	if !strings.HasPrefix(out, "removed 3 blobs and 1 root filesystem images") {
		t.Errorf("prune: %s", out)
	}
	if _, err := os.Stat(ext4); !os.IsNotExist(err) {
		t.Errorf("the root filesystem survived prune: %v", err)
	}
}

func TestPullErrorNamesServiceAndImage(t *testing.T) {
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer reg.Close()
	ref := strings.TrimPrefix(reg.URL, "http://") + "/nope:1"
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte("services:\n  web: {image: "+ref+"}\n"), 0o644)
	_, stderr, code := run(t, dir, "pull")
	if code == 0 || !strings.Contains(stderr, "service web: pulling "+ref) || !strings.Contains(stderr, "404") {
		t.Errorf("exit %d: %s", code, stderr)
	}
}

func TestImportArchive(t *testing.T) {
	home := t.TempDir()
	archive := filepath.Join(t.TempDir(), "busybox.tar")
	if out, err := exec.Command("go", "run", "../../examples/mkimage", "-ref", "vmcompose.local/busybox:1", "-busybox", "-o", archive).CombinedOutput(); err != nil {
		t.Fatalf("mkimage: %v\n%s", err, out)
	}
	out, _ := vmc(t, home, ".", "--progress", "quiet", "image", "import", archive)
	if !strings.HasPrefix(out, "imported vmcompose.local/busybox:1 sha256:") {
		t.Errorf("import: %s", out)
	}
	out, _ = vmc(t, home, ".", "image", "ls")
	if !strings.Contains(out, "vmcompose.local/busybox:1") {
		t.Errorf("image ls:\n%s", out)
	}
}
