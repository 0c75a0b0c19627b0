package watch

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"
)

// bigTree makes 20 000 files in 400 directories, a mid-sized project with
// its dependencies.
func bigTree(t testing.TB) string {
	dir := t.TempDir()
	for d := range 400 {
		sub := filepath.Join(dir, fmt.Sprintf("pkg%d/lib", d))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := range 50 {
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%d.js", f)), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// TestIdleCPU: watching a 20 000-file tree costs no CPU while nothing
// changes (no polling): under 1 % of a core over 10 s, the whole test
// process counted.
func TestIdleCPU(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 10 s")
	}
	dir := bigTree(t)
	start, cpu0 := time.Now(), cpuTime()
	ch := watching(t, Options{}, rule(dir))
	t.Logf("watching 20 000 files in 801 directories took %v (%v of CPU)", time.Since(start), cpuTime()-cpu0)

	cpu0 = cpuTime()
	time.Sleep(10 * time.Second)
	idle := cpuTime() - cpu0
	t.Logf("CPU used over 10 s idle: %v", idle)
	if idle > 100*time.Millisecond {
		t.Errorf("watching an idle tree used %v of CPU in 10 s, want under 100 ms", idle)
	}
	write(t, filepath.Join(dir, "pkg399/lib/f49.js"), "changed")
	expect(t, ch, `write pkg399/lib/f49.js 0644 "changed"`)
}

// BenchmarkEventToBatch: from a file's write to its batch, on a 20 000-file
// tree: the quiet period plus reading the file (p50 and p99 reported).
func BenchmarkEventToBatch(b *testing.B) {
	dir := bigTree(b)
	w, err := New([]Rule{rule(dir)}, Options{Warn: func(err error) { b.Error(err) }})
	if err != nil {
		b.Fatal(err)
	}
	ch := make(chan time.Time, 1)
	done := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	go func() { defer close(done); _ = w.Run(ctx, func(Batch) { ch <- time.Now() }) }()
	defer func() { cancel(); <-done }()
	var lat []time.Duration
	name := filepath.Join(dir, "pkg7/lib/f3.js")
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if err := os.WriteFile(name, []byte(fmt.Sprint(i)), 0o644); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, (<-ch).Sub(t0))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
