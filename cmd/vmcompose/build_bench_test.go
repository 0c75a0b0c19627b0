//go:build linux

package main_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testenv"
	"github.com/vmcompose/vmcompose/internal/testimage"
)

// benchDockerfile is a small app image: a base and three steps.
const benchDockerfile = `ARG BASE
FROM ${BASE}
COPY src/ /app/src/
RUN cat /app/src/*.txt > /app/all.txt
RUN echo built > /app/built
CMD ["cat", "/app/all.txt"]
`

// Goals for a build of benchDockerfile in the builder VM.
const (
	coldBuildGoal    = 1.5 // times the host's buildah
	cachedBuildGoal  = 2 * time.Second
	oneFileBuildGoal = 5 * time.Second
)

// BenchmarkBuild builds benchDockerfile with `vmcompose build`, each
// figure over the same Dockerfile built by the host's buildah as root
// (bud --layers --isolation chroot, overlay storage) in the same run, and
// over the goals:
//
//   - cold: after `builder prune` (the builder VM booted, the base loaded,
//     every step run) against the host's buildah with empty storage (the
//     base pulled from the same registry);
//   - one file changed: an edit of a copied file, the steps from its COPY
//     on run again (three edits in a row, the builder warm, as in a dev
//     loop);
//   - cached: a build with nothing changed.
func BenchmarkBuild(b *testing.B) {
	host := newHostBuildah(b)
	p := newBuildProject(b)
	base := p.push("base", testimage.Busybox(b))
	dir := filepath.Join(p.home, "benchapp")
	p.cleanup(dir)
	write := writer(b, dir)
	write("compose.yaml", "services:\n  app:\n    build:\n      context: .\n      args: {BASE: "+base+"}\n")
	write("Dockerfile", benchDockerfile)
	write("src/a.txt", "a\n")
	write("src/b.txt", "b\n")
	vm := func() time.Duration {
		start := time.Now()
		if _, stderr, code := p.in(dir, "", "build"); code != 0 {
			b.Fatalf("build: exit %d\n%s", code, stderr)
		}
		return time.Since(start)
	}
	var f buildFigures
	for i := 0; b.Loop(); i++ {
		if _, stderr, code := p.in(dir, "", "builder", "prune"); code != 0 {
			b.Fatalf("builder prune: %s", stderr)
		}
		host.prune()
		f.cold, f.hostCold = append(f.cold, vm()), append(f.hostCold, host.build(dir, base))
		for j := range 3 {
			write("src/b.txt", fmt.Sprintf("edit %d.%d\n", i, j))
			f.oneFile, f.hostOneFile = append(f.oneFile, vm()), append(f.hostOneFile, host.build(dir, base))
		}
		f.cached, f.hostCached = append(f.cached, vm()), append(f.hostCached, host.build(dir, base))
	}
	f.report(b)
}

type buildFigures struct {
	cold, oneFile, cached             []time.Duration
	hostCold, hostOneFile, hostCached []time.Duration
}

func (f *buildFigures) report(b *testing.B) {
	for _, m := range []struct {
		name      string
		vm, host  []time.Duration
		goal      time.Duration
		goalRatio float64
	}{
		{"cold", f.cold, f.hostCold, 0, coldBuildGoal},
		{"one-file", f.oneFile, f.hostOneFile, oneFileBuildGoal, 0},
		{"cached", f.cached, f.hostCached, cachedBuildGoal, 0},
	} {
		vm, host := median(m.vm), median(m.host)
		b.ReportMetric(vm.Seconds(), m.name+"-s")
		b.ReportMetric(host.Seconds(), "host-"+m.name+"-s")
		b.ReportMetric(vm.Seconds()/host.Seconds(), m.name+"/host")
		if m.goal > 0 {
			b.ReportMetric(vm.Seconds()/m.goal.Seconds(), m.name+"/goal")
		} else {
			b.ReportMetric(vm.Seconds()/host.Seconds()/m.goalRatio, m.name+"/goal")
		}
	}
}

// hostBuildah is the host's buildah as root with storage of its own.
type hostBuildah struct {
	b    *testing.B
	path string
	root string
}

func newHostBuildah(b *testing.B) *hostBuildah {
	path := testenv.LookPath(b, "buildah", "make setup installs it")
	if os.Geteuid() != 0 {
		testenv.Missing(b, "the host baseline runs buildah as root")
	}
	// Not in /tmp: overlay storage on a tmpfs is not what a host has.
	root, err := os.MkdirTemp("/var/tmp", "vmcompose-hostbuildah-")
	if err != nil {
		b.Fatal(err)
	}
	h := &hostBuildah{b: b, path: path, root: root}
	b.Cleanup(func() {
		h.prune()
		os.RemoveAll(root)
	})
	return h
}

func (h *hostBuildah) cmd(args ...string) *exec.Cmd {
	return exec.Command(h.path, append([]string{"--root", filepath.Join(h.root, "storage"),
		"--runroot", filepath.Join(h.root, "run"), "--storage-driver", "overlay"}, args...)...)
}

// build runs bud in dir as the builder VM does and returns how long it took.
func (h *hostBuildah) build(dir, base string) time.Duration {
	start := time.Now()
	out, err := h.cmd("bud", "--layers", "--isolation", "chroot", "--tls-verify=false",
		"--build-arg", "BASE="+base, "-t", "localhost/benchapp", dir).CombinedOutput()
	if err != nil {
		h.b.Fatalf("host buildah bud: %v\n%s", err, out)
	}
	return time.Since(start)
}

// prune empties the storage, as builder prune does the VM's.
func (h *hostBuildah) prune() {
	h.cmd("rmi", "--all", "--force").Run()
	exec.Command("umount", "-R", filepath.Join(h.root, "storage", "overlay")).Run()
	os.RemoveAll(filepath.Join(h.root, "storage"))
	os.RemoveAll(filepath.Join(h.root, "run"))
}
