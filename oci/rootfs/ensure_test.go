package rootfs

import (
	"context"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vmcompose/vmcompose/internal/atomicfile"
	"github.com/vmcompose/vmcompose/internal/testimage"
)

// ensureImage is deterministic, so that other processes get the same digest,
// and big enough that concurrent builds would overlap.
func ensureImage(t testing.TB) v1.Image {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	var entries []testimage.Entry
	for i := range 16 {
		b := make([]byte, 1<<20)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		entries = append(entries, testimage.File("data/file"+string(rune('a'+i)), 0o644, string(b)))
	}
	return testimage.Image(t, entries)
}

const helperEnv = "VMCOMPOSE_ROOTFS_ENSURE_HELPER"

// TestEnsureHelperProcess is not a test: TestEnsureConcurrent runs the test
// binary again with it to call Ensure from another process.
func TestEnsureHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process for TestEnsureConcurrent")
	}
	img := ensureImage(t)
	<-time.After(time.Until(startTime()))
	_, built, err := Ensure(context.Background(), img, dir)
	if err != nil {
		t.Fatal(err)
	}
	os.Stdout.WriteString("\nbuilt=" + map[bool]string{true: "true", false: "false"}[built] + "\n")
}

func startTime() time.Time {
	t, _ := time.Parse(time.RFC3339Nano, os.Getenv(helperEnv+"_START"))
	return t
}

func TestEnsureConcurrent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "cache")
	img := ensureImage(t)
	start := time.Now().Add(1500 * time.Millisecond)

	var results []bool
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			cmd := exec.Command(os.Args[0], "-test.run=^TestEnsureHelperProcess$", "-test.v")
			cmd.Env = append(os.Environ(), helperEnv+"="+dir, helperEnv+"_START="+start.Format(time.RFC3339Nano))
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Errorf("helper process: %v\n%s", err, out)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			switch {
			case strings.Contains(string(out), "\nbuilt=true\n"):
				results = append(results, true)
			case strings.Contains(string(out), "\nbuilt=false\n"):
				results = append(results, false)
			default:
				t.Errorf("helper process said:\n%s", out)
			}
		})
	}
	paths := make([]string, 2)
	for i := range 2 {
		wg.Go(func() {
			time.Sleep(time.Until(start))
			p, built, err := Ensure(context.Background(), img, dir)
			if err != nil {
				t.Errorf("Ensure: %v", err)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			paths[i] = p
			results = append(results, built)
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	n := 0
	for _, b := range results {
		if b {
			n++
		}
	}
	if len(results) != 4 || n != 1 {
		t.Fatalf("built flags %v: want exactly one build among 4 callers", results)
	}
	digest, _ := img.Digest()
	want := filepath.Join(dir, digest.Hex+".ext4")
	if paths[0] != want || paths[1] != want {
		t.Fatalf("paths %q, want %s", paths, want)
	}
	fsck(t, want)

	begin := time.Now()
	p, built, err := Ensure(context.Background(), img, dir)
	if err != nil || built || p != want {
		t.Fatalf("second Ensure = %s, %v, %v; want %s, false, nil", p, built, err, want)
	}
	t.Logf("second Ensure took %s", time.Since(begin))
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != digest.Hex+".ext4" && e.Name() != digest.Hex+".ext4.lock" {
			t.Errorf("left in the cache: %s", e.Name())
		}
	}
}

func TestEnsureRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	img := testimage.Image(t, []testimage.Entry{testimage.File("f", 0o644, "x")})
	digest, _ := img.Digest()
	if err := os.Symlink("/etc/passwd", Path(dir, digest.Hex)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Ensure(context.Background(), img, dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("Ensure over a symlink: %v", err)
	}
}

func TestEnsureRemovesStaleTemp(t *testing.T) {
	dir := t.TempDir()
	img := testimage.Image(t, []testimage.Entry{testimage.File("f", 0o644, "x")})
	digest, _ := img.Digest()
	stale := filepath.Join(dir, atomicfile.TempPrefix+digest.Hex+".ext4-12345")
	other := filepath.Join(dir, atomicfile.TempPrefix+"0123.ext4-12345")
	for _, f := range []string{stale, other} {
		if err := os.WriteFile(f, []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, built, err := Ensure(context.Background(), img, dir); err != nil || !built {
		t.Fatalf("Ensure: built=%v, %v", built, err)
	}
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale temp file of the image still there: %v", err)
	}
	if _, err := os.Stat(other); err != nil {
		t.Errorf("temp file of another image removed: %v", err)
	}
}
