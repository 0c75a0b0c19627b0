//go:build linux

package main_test

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

// BenchmarkUp measures `up -d --wait` of 1, 2, 4 and 8 independent
// services on the default network, a no-op `up` of the converged project
// (target: under 200 ms), `down`, and the host memory each idle service
// takes. "growth" is the up time per service against that of one service,
// measured in the same run (1.0: services start as fast side by side as
// alone).
func BenchmarkUp(b *testing.B) {
	p := newRunProject(b)
	ref := p.push("busybox", testimage.Busybox(b))
	// The first VM of a machine builds its template (see the README):
	// once, before anything is measured.
	warm := filepath.Join(p.home, "warm")
	p.cleanup(warm)
	if _, stderr, code := p.in(warm, "services:\n  s:\n    image: "+ref+"\n    command: [sleep, '1000']\n", "up", "-d", "--wait"); code != 0 {
		b.Fatalf("warm-up up: %s", stderr)
	}
	p.in(warm, "", "down", "-t", "0")
	var perOne float64
	for _, n := range []int{1, 2, 4, 8} {
		b.Run(fmt.Sprintf("services=%d", n), func(b *testing.B) {
			p := *p
			p.t = b
			dir := filepath.Join(p.home, fmt.Sprintf("bench%d", n))
			p.cleanup(dir)
			compose := "services:\n"
			for i := range n {
				compose += fmt.Sprintf("  s%d:\n    image: %s\n    command: [sleep, '1000']\n    stop_grace_period: 1s\n", i, ref)
			}
			var ups, noops, downs []time.Duration
			var pss, rss []float64
			for b.Loop() {
				start := time.Now()
				if _, stderr, code := p.in(dir, compose, "up", "-d", "--wait"); code != 0 {
					b.Fatalf("up of %d: %s", n, stderr)
				}
				ups = append(ups, time.Since(start))
				start = time.Now()
				if _, stderr, code := p.in(dir, compose, "up", "-d", "--wait"); code != 0 {
					b.Fatalf("no-op up of %d: %s", n, stderr)
				}
				noops = append(noops, time.Since(start))
				if len(pss) == 0 {
					// Idle: the services sleep; what the host holds for
					// each is its qemu, plus its share of the project's
					// supervisor and network process.
					time.Sleep(2 * time.Second)
					state := filepath.Join(p.home, "state", "vmcompose", filepath.Base(dir))
					var qp, qr, other float64
					qs := qemus(state)
					if len(qs) != n {
						b.Fatalf("%d qemu processes under %s, want %d", len(qs), state, n)
					}
					for _, pid := range qs {
						ps, rs := memory(b, pid)
						qp, qr = qp+ps, qr+rs
					}
					for _, pid := range append(supervisors(state), networkProcs(state)...) {
						ps, _ := memory(b, pid)
						other += ps
					}
					pss = append(pss, (qp+other)/float64(n))
					rss = append(rss, qr/float64(n))
				}
				start = time.Now()
				if _, stderr, code := p.in(dir, "", "down", "-t", "1"); code != 0 {
					b.Fatalf("down of %d: %s", n, stderr)
				}
				downs = append(downs, time.Since(start))
			}
			up := median(ups).Seconds()
			if n == 1 {
				perOne = up
			}
			b.ReportMetric(up, "up-s")
			b.ReportMetric(float64(median(noops).Microseconds())/1000, "noop-ms")
			b.ReportMetric(median(downs).Seconds(), "down-s")
			b.ReportMetric(slices.Max(pss), "pss-MiB/service")
			b.ReportMetric(slices.Max(rss), "qemu-rss-MiB/service")
			if perOne > 0 {
				b.ReportMetric(up/perOne/float64(n), "growth")
			}
		})
	}
}

// memory returns a process's proportional and resident set sizes in MiB.
func memory(b *testing.B, pid int) (pss, rss float64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(string(f[1]), 64)
		switch string(f[0]) {
		case "Pss:":
			pss = kb / 1024
		case "Rss:":
			rss = kb / 1024
		}
	}
	return pss, rss
}
