//go:build linux

package main_test

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vmcompose/vmcompose/internal/testimage"
	"github.com/vmcompose/vmcompose/vm/vmtest"
)

// storageCase is where BenchmarkStorage runs the workload in a guest: in
// target, on the storage that yaml (the end of the service and the
// top-level volumes) gives the service, which the guest must see as a
// mount of type fs.
type storageCase struct {
	name, target, fs, yaml string
	virtiofs               bool // served by virtiofsd, which needs root
}

var storageCases = []storageCase{
	{name: "overlay", target: "/bench", fs: "overlay"},
	{name: "volume", target: "/volume", fs: "ext4",
		yaml: "    volumes: [\"data:/volume\"]\nvolumes:\n  data: {}\n"},
	{name: "shared", target: "/shared", fs: "virtiofs", virtiofs: true,
		yaml: "    volumes: [\"data:/shared\"]\nvolumes:\n  data:\n    driver_opts: {sharing: shared}\n"},
	{name: "bind", target: "/bind", fs: "virtiofs", virtiofs: true,
		yaml: "    volumes: [\"./bind:/bind\"]\n"},
}

// BenchmarkStorage runs one workload (internal/storagebench: a 256 MiB
// file written sequentially and fsynced, read back once out of the page
// cache, then 10 000 small files created, stat'ed and deleted) on the
// host, in a temp dir on the file system that holds the VMs' disk images,
// and in a guest (`vmcompose exec` in a service of 1 GiB of memory) on its
// writable layer, a named volume, a shared named volume and a bind mount.
// The program times itself where it runs, so VM boots are not counted.
// Each guest run follows a host run, and a case's ratios are guest/host
// of those: both measured under the load the machine had then. The "host"
// case is the host alone, for its own figures. The guest drops its own
// page cache before the read, not the host's: QEMU's disks and virtiofsd
// go through the host's page cache, as every guest's do.
func BenchmarkStorage(b *testing.B) {
	prog := vmtest.GoBuild(b, "github.com/vmcompose/vmcompose/internal/storagebench", "storagebench")
	p := newRunProject(b)
	ref := p.push("storagebench", storageImage(b, prog))
	hostDir := filepath.Join(p.home, "host")
	var rows []storageRow
	b.Run("host", func(b *testing.B) {
		var runs []storageRun
		for b.Loop() {
			runs = append(runs, hostStorage(b, prog, hostDir))
		}
		m := medianRun(runs)
		m.report(b, nil)
		rows = append(rows, storageRow{name: "host", r: m})
	})
	for _, c := range storageCases {
		b.Run(c.name, func(b *testing.B) {
			skip := func(why string) {
				rows = append(rows, storageRow{name: c.name, skipped: why})
				b.Skip(why)
			}
			if c.virtiofs && os.Geteuid() != 0 {
				skip("QEMU's virtiofsd needs root: run the benchmark as root")
			}
			p := *p
			p.t = b
			dir := filepath.Join(p.home, "storage-"+c.name)
			p.cleanup(dir)
			compose := "services:\n  bench:\n    image: " + ref + "\n    command: [sleep, '100000']\n    stop_grace_period: 1s\n    x-vm: {memory: 1g, disk: 2g}\n" + c.yaml
			if _, stderr, code := p.in(dir, compose, "up", "-d", "--wait"); code != 0 {
				if c.name == "shared" && strings.Contains(stderr, "sharing") {
					skip("shared volumes are refused: " + strings.TrimSpace(stderr))
				}
				b.Fatalf("%s: up -d --wait: exit %d\n%s", c.name, code, stderr)
			}
			var hosts, runs []storageRun
			for b.Loop() {
				hosts = append(hosts, hostStorage(b, prog, hostDir))
				r, why := guestStorage(b, &p, dir, c)
				if why != "" {
					skip(why)
				}
				runs = append(runs, r)
			}
			p.in(dir, "", "down", "-t", "0") // frees its 1 GiB before the next case
			m, h := medianRun(runs), medianRun(hosts)
			m.report(b, &h)
			rows = append(rows, storageRow{name: c.name, r: m, host: &h})
		})
	}
	printStorage(rows)
}

// storageImage is busybox with the workload at /bin/storagebench.
func storageImage(b *testing.B, prog string) v1.Image {
	data, err := os.ReadFile(prog)
	if err != nil {
		b.Fatal(err)
	}
	bin := testimage.Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: "bin/storagebench", Mode: 0o755, ModTime: testimage.Epoch}, Data: data}
	return testimage.Image(b, append(testimage.BusyboxEntries(b), bin))
}

// storageRun is the line internal/storagebench prints; times in seconds.
type storageRun struct {
	FS      string  `json:"fs"`
	Bytes   int64   `json:"bytes"`
	Dropped string  `json:"dropped"`
	Cached  float64 `json:"cached"`
	Write   float64 `json:"write_s"`
	Read    float64 `json:"read_s"`
	Files   int     `json:"files"`
	Create  float64 `json:"create_s"`
	Stat    float64 `json:"stat_s"`
	Delete  float64 `json:"delete_s"`
}

// parseStorage reads the line storagebench printed in where, which must
// have read its file from the storage, not from the page cache.
func parseStorage(b *testing.B, where, out string) storageRun {
	var r storageRun
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &r); err != nil || r.Write <= 0 || r.Files == 0 {
		b.Fatalf("%s: storagebench printed %q: %v", where, out, err)
	}
	if r.Cached > 0.01 {
		b.Fatalf("%s: %.0f%% of the file was still in the page cache after %s: the read would not reach the storage", where, 100*r.Cached, r.Dropped)
	}
	return r
}

// hostStorage runs the workload on the host in dir. It evicts its file
// from the page cache alone: dropping the whole cache would slow down
// whatever else this host runs.
func hostStorage(b *testing.B, prog, dir string) storageRun {
	out, err := exec.Command(prog, "-dir", dir).Output()
	if err != nil {
		b.Fatalf("storagebench on the host: %v", err)
	}
	return parseStorage(b, "host", string(out))
}

// guestStorage runs the workload in the case's service, up in dir,
// which drops its whole page cache before the read. It returns why the
// case must be skipped: the shared case while sharing: shared still makes
// a disk.
func guestStorage(b *testing.B, p *runProject, dir string, c storageCase) (storageRun, string) {
	start := time.Now()
	out, stderr, code := p.in(dir, "", "exec", "-T", "bench", "/bin/storagebench", "-dir", c.target, "-drop-caches")
	wall := time.Since(start).Seconds()
	if code != 0 {
		b.Fatalf("%s: vmcompose exec: exit %d\n%s%s", c.name, code, out, stderr)
	}
	r := parseStorage(b, c.name, out)
	if r.FS == "ext4" && c.name == "shared" {
		return storageRun{}, "driver_opts.sharing: shared made an ext4 disk, not a directory over virtiofs: this build has no shared volumes yet"
	}
	if r.FS != c.fs {
		b.Fatalf("%s: %s is on %s in the guest, want %s", c.name, c.target, r.FS, c.fs)
	}
	if sum := r.Write + r.Read + r.Create + r.Stat + r.Delete; sum > wall {
		b.Fatalf("%s: the guest timed %.2f s of work in an exec of %.2f s: its clock is wrong", c.name, sum, wall)
	}
	return r, ""
}

// medianRun is a run whose every time is the median of that time in runs.
func medianRun(runs []storageRun) storageRun {
	times := func(r *storageRun) []*float64 { return []*float64{&r.Write, &r.Read, &r.Create, &r.Stat, &r.Delete} }
	m := runs[0]
	for i, t := range times(&m) {
		v := make([]float64, len(runs))
		for j := range runs {
			v[j] = *times(&runs[j])[i]
		}
		slices.Sort(v)
		*t = v[len(v)/2]
	}
	return m
}

// Speeds: MB/s are 10^6 bytes a second; files/s counts the whole
// create+stat+delete of a file.
func (r storageRun) writeMBs() float64 { return float64(r.Bytes) / 1e6 / r.Write }
func (r storageRun) readMBs() float64  { return float64(r.Bytes) / 1e6 / r.Read }
func (r storageRun) files() float64    { return float64(r.Files) / (r.Create + r.Stat + r.Delete) }

// ratios are r's speeds over h's.
func (r storageRun) ratios(h storageRun) (write, read, files float64) {
	return r.writeMBs() / h.writeMBs(), r.readMBs() / h.readMBs(), r.files() / h.files()
}

// report puts the speeds, and their ratios to host's when there is one,
// into the benchmark's output.
func (r storageRun) report(b *testing.B, host *storageRun) {
	b.ReportMetric(r.writeMBs(), "write-MB/s")
	b.ReportMetric(r.readMBs(), "read-MB/s")
	b.ReportMetric(r.files(), "files/s")
	if host != nil {
		write, read, files := r.ratios(*host)
		b.ReportMetric(write, "write-ratio")
		b.ReportMetric(read, "read-ratio")
		b.ReportMetric(files, "files-ratio")
	}
}

type storageRow struct {
	name    string
	r       storageRun
	host    *storageRun // the host runs beside r's, if any
	skipped string
}

// printStorage prints the table of what was measured: speeds, the ratios
// to the host runs beside them, and the cases skipped with why.
func printStorage(rows []storageRow) {
	if len(rows) == 0 {
		return
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "storage\tfs\twrite MB/s\tread MB/s\tfiles/s\tcreate/s\tstat/s\tdelete/s\twrite/host\tread/host\tfiles/host")
	var skipped []string
	for _, row := range rows {
		r := row.r
		if row.skipped != "" {
			skipped = append(skipped, row.name+": skipped: "+row.skipped)
			continue
		}
		n := float64(r.Files)
		fmt.Fprintf(w, "%s\t%s\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f\t%.0f", row.name, r.FS, r.writeMBs(), r.readMBs(), r.files(), n/r.Create, n/r.Stat, n/r.Delete)
		if row.host != nil {
			write, read, files := r.ratios(*row.host)
			fmt.Fprintf(w, "\t%.2f\t%.2f\t%.2f", write, read, files)
		}
		fmt.Fprintln(w)
	}
	w.Flush()
	for _, s := range skipped {
		fmt.Println(s)
	}
}
