package oci

import (
	"context"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// benchImage is a ~100 MB image of 6 layers of deterministic pseudo-random
// content (it does not compress), built once per test binary.
var benchImage = sync.OnceValues(func() (v1.Image, error) {
	var layers []v1.Layer
	for i := range 6 {
		l, err := random.Layer(17<<20, types.OCILayer, random.WithSource(rand.NewSource(int64(1000+i))))
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
	}
	return imageOfLayers("linux/amd64", layers)
})

// craneBinary returns crane from PATH, or installs crane v0.22.1 (the
// go-containerregistry version vmcompose uses) into a cache directory.
func craneBinary(b *testing.B) string {
	if p, err := exec.LookPath("crane"); err == nil {
		return p
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	gobin := filepath.Join(cache, "vmcompose-bench", "bin")
	crane := filepath.Join(gobin, "crane")
	if _, err := os.Stat(crane); err == nil {
		return crane
	}
	cmd := exec.Command("go", "install", "github.com/google/go-containerregistry/cmd/crane@v0.22.1")
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Skipf("crane not on PATH and go install failed: %v\n%s", err, out)
	}
	return crane
}

// BenchmarkPull pulls a ~100 MB, 6-layer image from an in-process registry
// into a fresh store, and pulls the same image with `crane pull --format oci`
// (go-containerregistry's CLI, the baseline) into a fresh directory, in
// alternating order. It reports both times per pull and ours/crane as
// "ratio".
func BenchmarkPull(b *testing.B) {
	for _, jobs := range []int{DefaultJobs, 8} {
		b.Run(fmt.Sprintf("jobs=%d", jobs), func(b *testing.B) { benchmarkPull(b, jobs) })
	}
}

func benchmarkPull(b *testing.B, jobs int) {
	img, err := benchImage()
	if err != nil {
		b.Fatal(err)
	}
	host, _ := newRegistry(b, nil)
	ref := host + "/bench:1"
	push(b, ref, img)
	size := int64(0)
	m, _ := img.Manifest()
	for _, l := range m.Layers {
		size += l.Size
	}
	crane := craneBinary(b)
	ctx := context.Background()

	var ours, theirs time.Duration
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		runOurs := func() {
			s, err := Open(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			start := time.Now()
			if _, err := s.Pull(ctx, ref, WithPlatform("linux/amd64"), WithJobs(jobs)); err != nil {
				b.Fatal(err)
			}
			ours += time.Since(start)
		}
		runCrane := func() {
			dir := filepath.Join(b.TempDir(), "crane")
			start := time.Now()
			out, err := exec.Command(crane, "pull", "--format", "oci", "--platform", "linux/amd64", ref, dir).CombinedOutput()
			if err != nil {
				b.Fatalf("crane pull: %v\n%s", err, out)
			}
			theirs += time.Since(start)
		}
		if i%2 == 0 {
			runOurs()
			runCrane()
		} else {
			runCrane()
			runOurs()
		}
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(ours.Seconds()/n, "ours-s/pull")
	b.ReportMetric(theirs.Seconds()/n, "crane-s/pull")
	b.ReportMetric(ours.Seconds()/theirs.Seconds(), "ratio")
}
