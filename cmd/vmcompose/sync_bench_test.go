//go:build linux

package main_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/internal/testimage"
	"github.com/vmcompose/vmcompose/supervisor"
)

// BenchmarkSync measures the agent's sync through the supervisor, as
// `watch` uses it: the round trip of a batch of one small file (from the
// request's first byte to the answer; median and p95 of 50), and a batch
// of 1 000 files of 50 MB in all, without and with fsync, against `tar c |
// vmcompose exec -T svc tar x` of the same tree in the same run ("ratio":
// tar's time over sync's; above 1, sync is faster).
func BenchmarkSync(b *testing.B) {
	p := newRunProject(b)
	ref := p.push("busybox", testimage.Busybox(b))
	dir := filepath.Join(p.home, "syncbench")
	p.cleanup(dir)
	state := filepath.Join(p.home, "state", "vmcompose", "syncbench")
	compose := "services:\n  app:\n    image: " + ref + "\n    command: [sleep, '1000000']\n    stop_grace_period: 1s\n"
	if _, stderr, code := p.in(dir, compose, "up", "-d", "--wait"); code != 0 {
		b.Fatalf("up: %s", stderr)
	}
	src, entries := benchTree(b, 1000, 50<<20)
	ctx := context.Background()
	sync := func(target string, fsync bool, entries []agent.SyncEntry) time.Duration {
		req := &supervisor.Request{Services: []string{"app"}, Sync: &agent.SyncSpec{Target: target, Fsync: fsync}}
		t0 := time.Now()
		res, err := supervisor.Sync(ctx, state, req, entries)
		d := time.Since(t0)
		if err != nil || len(res.Skipped) > 0 {
			b.Fatalf("sync into %s: %+v %v", target, res, err)
		}
		return d
	}
	remove := func(target string) {
		// Keeps the writable layer (1g) from filling up across iterations.
		sync("/bench", false, []agent.SyncEntry{{Op: agent.SyncDelete, Path: filepath.Base(target)}})
	}
	small := []agent.SyncEntry{bytesEntry("small.txt", 0o644, "a small edit\n")}
	var rtts, syncs, fsyncs, tars []time.Duration
	for i := 0; b.Loop(); i++ {
		for range 50 {
			rtts = append(rtts, sync("/bench/small", false, small))
		}
		target := fmt.Sprintf("/bench/%d-", i)
		syncs = append(syncs, sync(target+"sync", false, entries))
		remove(target + "sync")
		fsyncs = append(fsyncs, sync(target+"fsync", true, entries))
		remove(target + "fsync")
		tars = append(tars, tarExec(b, p, dir, "app", src, target+"tar"))
		remove(target + "tar")
	}
	slices.Sort(rtts)
	b.ReportMetric(float64(median(rtts).Microseconds())/1000, "rtt-median-ms")
	b.ReportMetric(float64(rtts[len(rtts)*95/100].Microseconds())/1000, "rtt-p95-ms")
	b.ReportMetric(median(syncs).Seconds(), "sync-50MB-s")
	b.ReportMetric(median(fsyncs).Seconds(), "sync-fsync-50MB-s")
	b.ReportMetric(median(tars).Seconds(), "tar-exec-50MB-s")
	b.ReportMetric(median(tars).Seconds()/median(syncs).Seconds(), "ratio")
}

// benchTree writes n files of size bytes in all (random, in 10
// directories) and returns their directory and sync entries that read
// them from there.
func benchTree(b *testing.B, n int, size int64) (string, []agent.SyncEntry) {
	src := b.TempDir()
	each := size / int64(n)
	buf := make([]byte, each)
	var entries []agent.SyncEntry
	for i := range n {
		rel := fmt.Sprintf("d%d/f%04d", i%10, i)
		path := filepath.Join(src, rel)
		rand.Read(buf)
		os.MkdirAll(filepath.Dir(path), 0o755)
		if err := os.WriteFile(path, buf, 0o644); err != nil {
			b.Fatal(err)
		}
		entries = append(entries, agent.SyncEntry{Op: agent.SyncFile, Path: rel, Mode: 0o644, Size: each,
			Open: func() (io.ReadCloser, error) { return os.Open(path) }})
	}
	return src, entries
}

// tarExec copies the tree src into target in service's VM as `tar c |
// vmcompose exec -T service tar x` does, the baseline of a sync, and
// returns how long that took.
func tarExec(b *testing.B, p *runProject, dir, service, src, target string) time.Duration {
	host := exec.Command("tar", "c", "-C", src, ".")
	guest := p.cmdIn(dir, "", "quiet", "exec", "-T", service, "sh", "-c", "mkdir -p "+target+" && tar x -C "+target)
	pipe, err := host.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	guest.Stdin = pipe
	t0 := time.Now()
	if err := host.Start(); err != nil {
		b.Fatal(err)
	}
	out, err := guest.CombinedOutput()
	if herr := host.Wait(); err != nil || herr != nil {
		b.Fatalf("tar | exec tar x: %v %v\n%s", err, herr, out)
	}
	return time.Since(t0)
}
