package rootfs

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

// benchImage is about 100 MB in four layers: busybox, then three layers of
// files from 1 KiB to 8 MiB (random, text-like and zero-padded content),
// the upper ones deleting and replacing some of the lower ones.
func benchImage(b testing.TB) (v1.Image, int64) {
	b.Helper()
	layers, total := benchLayers(b)
	return testimage.Image(b, layers...), total
}

func benchLayers(b testing.TB) ([][]testimage.Entry, int64) {
	b.Helper()
	rng := rand.New(rand.NewPCG(7, 11))
	words := strings.Fields("the quick brown fox jumps over a lazy dog while compose starts every service in its own vm")
	content := func(n int) string {
		buf := make([]byte, 0, n)
		switch rng.IntN(3) {
		case 0:
			for len(buf) < n {
				buf = append(buf, byte(rng.Uint32()))
			}
		case 1:
			for len(buf) < n {
				buf = append(buf, words[rng.IntN(len(words))]...)
				buf = append(buf, ' ')
			}
		default:
			buf = append(buf, make([]byte, n/2)...)
			for len(buf) < n {
				buf = append(buf, byte(rng.Uint32()))
			}
		}
		return string(buf[:n])
	}
	layers := [][]testimage.Entry{testimage.BusyboxEntries(b)}
	var total int64
	for l := range 3 {
		var entries []testimage.Entry
		var size int64
		for i := 0; size < 32<<20; i++ {
			n := 1 << (10 + rng.IntN(14)) // 1 KiB .. 8 MiB
			n += rng.IntN(n)
			dir := fmt.Sprintf("data/d%d", rng.IntN(20))
			entries = append(entries, testimage.File(fmt.Sprintf("%s/l%d-f%04d", dir, l, i), 0o644, content(n)))
			size += int64(n)
		}
		if l > 0 {
			entries = append(entries, testimage.Whiteout(fmt.Sprintf("data/d%d", l)), testimage.Opaque(fmt.Sprintf("data/d%d", 10+l)))
		}
		layers = append(layers, entries)
		total += size
	}
	return layers, total
}

// BenchmarkRootfs compares Build with the baseline it replaces: extract the
// flattened image to a directory, then mkfs.ext4 -d. It reports both times,
// their ratio (Build / baseline, lower is better) and the time of an Ensure
// that finds the image already built.
func BenchmarkRootfs(b *testing.B) {
	for _, tool := range []string{"mkfs.ext4", "tar"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s not found", tool)
		}
	}
	layers, total := benchLayers(b)
	plain := testimage.Image(b, layers...)
	var gz []v1.Layer
	for _, l := range layers {
		gz = append(gz, testimage.GzipLayer(b, testimage.Tar(b, l)))
	}
	gzipped := testimage.FromLayers(b, gz...)
	for _, bc := range []struct {
		name string
		img  v1.Image
	}{{"uncompressed", plain}, {"gzip", gzipped}} {
		b.Run(bc.name, func(b *testing.B) { benchmarkRootfs(b, bc.img, total) })
	}
}

func benchmarkRootfs(b *testing.B, img v1.Image, total int64) {
	dir := b.TempDir()
	ctx := context.Background()
	var ours, base, again time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		dst := filepath.Join(dir, "ours.ext4")
		if err := Build(ctx, img, dst); err != nil {
			b.Fatal(err)
		}
		ours += time.Since(start)

		start = time.Now()
		baseline(b, img, dir, total)
		base += time.Since(start)

		cache := filepath.Join(dir, fmt.Sprintf("cache%d", i))
		if _, _, err := Ensure(ctx, img, cache); err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		if _, built, err := Ensure(ctx, img, cache); err != nil || built {
			b.Fatalf("second Ensure: built=%v, %v", built, err)
		}
		again += time.Since(start)
		os.RemoveAll(cache)
	}
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(ours.Seconds()/n, "build-s/op")
	b.ReportMetric(base.Seconds()/n, "untar+mkfs-s/op")
	b.ReportMetric(ours.Seconds()/base.Seconds(), "ratio")
	b.ReportMetric(float64(again.Microseconds())/n, "ensure-again-µs/op")
	b.ReportMetric(float64(total)/1e6, "content-MB")
}

func baseline(b *testing.B, img v1.Image, dir string, total int64) {
	b.Helper()
	tree := filepath.Join(dir, "tree")
	out := filepath.Join(dir, "mkfs.ext4")
	os.RemoveAll(tree)
	os.Remove(out)
	if err := os.Mkdir(tree, 0o755); err != nil {
		b.Fatal(err)
	}
	tarCmd := exec.Command("tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "-xpf", "-", "-C", tree)
	rc := mutate.Extract(img)
	tarCmd.Stdin = rc
	if outb, err := tarCmd.CombinedOutput(); err != nil {
		b.Fatalf("tar -x: %v\n%s", err, outb)
	}
	rc.Close()
	size := (total*3/2 + 64<<20) / 4096 * 4096
	mkfs := exec.Command("mkfs.ext4", "-q", "-F", "-b", "4096", "-d", tree, out, fmt.Sprint(size/1024)+"k")
	if outb, err := mkfs.CombinedOutput(); err != nil {
		b.Fatalf("mkfs.ext4 -d: %v\n%s", err, outb)
	}
}
