//go:build linux

package main_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

// The dev loop's goals for an edit of a small file under a sync rule.
const (
	editMedianGoal = 100 * time.Millisecond
	editP95Goal    = 250 * time.Millisecond
)

// watchBenchCompose has a web page synced into busybox httpd's directory
// (and a 20 000-file tree watched, for the idle cost), a page that the
// process copies at its start under a sync+restart rule (with a fresh
// uuid, so that each start serves a new page), and a service whose rule
// initial-syncs a 50 MB tree.
const watchBenchCompose = `services:
  web:
    image: %[1]s
    command: [sh, -c, "mkdir -p /www && exec httpd -f -p 80 -h /www"]
    ports: ["127.0.0.1:%[2]s:80"]
    stop_grace_period: 1s
    develop:
      watch:
        - {path: ./www, action: sync, target: /www, initial_sync: true}
        - {path: %[4]s, action: sync, target: /idle}
  app:
    image: %[1]s
    command: [sh, -c, "mkdir -p /www && { cat /app/index.html; cat /proc/sys/kernel/random/uuid; } >/www/index.html; exec httpd -f -p 80 -h /www"]
    ports: ["127.0.0.1:%[3]s:80"]
    stop_grace_period: 1s
    develop:
      watch:
        - {path: ./app, action: sync+restart, target: /app, initial_sync: true}
  bulk:
    image: %[1]s
    command: [sleep, "1000000"]
    stop_grace_period: 1s
    develop:
      watch:
        - {path: %[5]s, action: sync, target: /bulk, initial_sync: true}
`

// BenchmarkWatch measures the dev loop through real `vmcompose watch`
// processes, each figure with a ratio against a goal or a baseline of the
// same run:
//
//   - an edit of a small file under a sync rule, from the host's write
//     until busybox httpd in the guest serves the new content (median and
//     p95 of 50, over the goals of 100 and 250 ms). The host polls HTTP
//     every 2 ms; a poll adds at most one 2 ms sleep and one GET to a
//     figure ("poll-get-ms" is a GET's median);
//   - the initial_sync of 1 000 files of 50 MB in all, from starting
//     `watch --no-up` until it prints that it is watching (its event's own
//     ms as "initial-event-s"), over `tar c | vmcompose exec -T tar x` of
//     the same tree;
//   - a sync+restart edit, from the write until the restarted process
//     serves the new page on its published port (median of 10), over
//     `vmcompose restart` and the same poll;
//   - the CPU time of a watch following a 20 000-file tree over 10 s
//     without edits: utime+stime, and the time its threads ran
//     ("idle-oncpu", finer than utime's 10 ms ticks), over the time the
//     web VM's QEMU ran meanwhile.
func BenchmarkWatch(b *testing.B) {
	p := newRunProject(b)
	ref := p.push("busybox", testimage.Busybox(b))
	dir := filepath.Join(p.home, "watchbench")
	p.cleanup(dir)
	bulk, _ := benchTree(b, 1000, 50<<20)
	idle, _ := benchTree(b, 20000, 20000*64)
	webPort, appPort := freePort(b), freePort(b)
	writeFile(b, filepath.Join(dir, "www", "index.html"), "first\n")
	writeFile(b, filepath.Join(dir, "app", "index.html"), "first\n")
	compose := fmt.Sprintf(watchBenchCompose, ref, webPort, appPort, idle, bulk)
	if _, stderr, code := p.in(dir, compose, "up", "-d", "--wait"); code != 0 {
		b.Fatalf("up: %s", stderr)
	}
	w, _, werr := p.background(dir, "Watching 2 services: app, web", "watch", "--quiet", "app", "web")
	defer func() {
		w.Process.Signal(os.Interrupt)
		if err := w.Wait(); err != nil {
			b.Errorf("watch after SIGINT: %v\n%s", err, werr)
		}
	}()
	web, app := "http://127.0.0.1:"+webPort+"/", "http://127.0.0.1:"+appPort+"/"
	var f watchFigures
	for i := 0; b.Loop(); i++ {
		time.Sleep(time.Second) // the up and the previous iteration's edits settle
		wt, wc, qc := idleCPU(b, w.Process.Pid, p.ps(dir)["web"].Pid, 10*time.Second)
		f.ticks, f.cpu, f.qemuCPU = append(f.ticks, wt), append(f.cpu, wc), append(f.qemuCPU, qc)
		busy := onCPU(b, w.Process.Pid)
		for j := range 50 {
			f.edits, f.gets = editPage(b, web, filepath.Join(dir, "www", "index.html"), fmt.Sprintf("edit %d.%d\n", i, j), f.edits, f.gets)
		}
		// The pid measured idle is the one that synced.
		if busy = onCPU(b, w.Process.Pid) - busy; busy == 0 {
			b.Fatalf("watch (pid %d) ran no CPU over 50 edits: not the process that syncs", w.Process.Pid)
		}
		f.editCPU = append(f.editCPU, busy/50)
		for j := range 10 {
			want := fmt.Sprintf("restart %d.%d\n", i, j)
			f.restarts = append(f.restarts, restartedPage(b, app, want, func() {
				writeFile(b, filepath.Join(dir, "app", "index.html"), want)
			}))
		}
		for j := range 10 {
			f.cliRestarts = append(f.cliRestarts, restartedPage(b, app, fmt.Sprintf("restart %d.9\n", i), func() {
				if _, stderr, code := p.in(dir, "", "restart", "app"); code != 0 {
					b.Fatalf("restart %d: %s", j, stderr)
				}
			}))
		}
		watch, event := initialSync(b, p, dir)
		f.watches, f.events = append(f.watches, watch), append(f.events, event)
		f.tars = append(f.tars, tarExec(b, p, dir, "bulk", bulk, "/bulktar"))
		p.in(dir, "", "exec", "-T", "bulk", "rm", "-rf", "/bulk", "/bulktar")
	}
	f.report(b)
}

// watchFigures are BenchmarkWatch's measurements over its iterations.
type watchFigures struct {
	edits, gets, restarts, cliRestarts, watches, events, tars []time.Duration
	ticks, cpu, qemuCPU, editCPU                              []time.Duration
}

func (f *watchFigures) report(b *testing.B) {
	edits := slices.Sorted(slices.Values(f.edits))
	editMedian, editP95 := median(edits), edits[len(edits)*95/100]
	b.ReportMetric(ms(editMedian), "edit-median-ms")
	b.ReportMetric(ms(editP95), "edit-p95-ms")
	b.ReportMetric(editMedian.Seconds()/editMedianGoal.Seconds(), "edit-median/goal")
	b.ReportMetric(editP95.Seconds()/editP95Goal.Seconds(), "edit-p95/goal")
	b.ReportMetric(ms(median(f.gets)), "poll-get-ms")
	b.ReportMetric(median(f.watches).Seconds(), "initial-sync-50MB-s")
	b.ReportMetric(median(f.events).Seconds(), "initial-event-s")
	b.ReportMetric(median(f.tars).Seconds(), "tar-exec-50MB-s")
	b.ReportMetric(median(f.watches).Seconds()/median(f.tars).Seconds(), "initial/tar")
	b.ReportMetric(ms(median(f.restarts)), "sync+restart-ms")
	b.ReportMetric(ms(median(f.cliRestarts)), "cli-restart-ms")
	b.ReportMetric(median(f.restarts).Seconds()/median(f.cliRestarts).Seconds(), "sync+restart/cli-restart")
	b.Logf("idle 10 s: watch ran %v (utime+stime %v), the web VM's QEMU %v; watch ran %v an edit", f.cpu, f.ticks, f.qemuCPU, f.editCPU)
	b.ReportMetric(ms(median(f.ticks)), "idle-cpu-ms/10s")
	b.ReportMetric(ms(median(f.cpu)), "idle-oncpu-ms/10s")
	b.ReportMetric(ms(median(f.qemuCPU)), "qemu-idle-cpu-ms/10s")
	b.ReportMetric(median(f.cpu).Seconds()/median(f.qemuCPU).Seconds(), "idle-cpu/qemu")
}

// editPage writes want to page and appends to edits the time until url
// serves it, and to gets the time of one more GET.
func editPage(b *testing.B, url, page, want string, edits, gets []time.Duration) ([]time.Duration, []time.Duration) {
	t0 := time.Now()
	writeFile(b, page, want)
	awaitPage(b, url, func(got string) bool { return got == want })
	edits = append(edits, time.Since(t0))
	t0 = time.Now()
	getPage(url)
	return edits, append(gets, time.Since(t0))
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func writeFile(b *testing.B, path, data string) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
		b.Fatal(err)
	}
}

// pageClient opens a connection per GET, as busybox httpd closes each.
var pageClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func getPage(url string) (string, error) {
	resp, err := pageClient.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(body), err
}

// awaitPage polls url every 2 ms until ok accepts its page, for at most
// 30 s.
func awaitPage(b *testing.B, url string, ok func(string) bool) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		page, err := getPage(url)
		if err == nil && ok(page) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s after 30s: %q, %v", url, page, err)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// restartedPage runs change and returns how long it took until url serves
// a page other than before (a new process: a new uuid) that begins with
// want.
func restartedPage(b *testing.B, url, want string, change func()) time.Duration {
	var old string
	awaitPage(b, url, func(page string) bool { old = page; return true })
	t0 := time.Now()
	change()
	awaitPage(b, url, func(page string) bool { return page != old && strings.HasPrefix(page, want) })
	return time.Since(t0)
}

var initialEvent = regexp.MustCompile(`^bulk: sync \(initial sync\) \d+ files to /bulk in (\d+)ms$`)

// initialSync runs `watch --no-up bulk` and returns the time from its start
// until it said it was watching, and the initial sync's event's ms.
func initialSync(b *testing.B, p *runProject, dir string) (watching, event time.Duration) {
	c := p.cmdIn(dir, "", "quiet", "watch", "--no-up", "bulk")
	var stderr bytes.Buffer
	c.Stderr = &stderr
	out, err := c.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	if err := c.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() {
		c.Process.Signal(os.Interrupt)
		c.Wait()
	}()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if m := initialEvent.FindStringSubmatch(sc.Text()); m != nil {
			n, _ := strconv.Atoi(m[1])
			event = time.Duration(n) * time.Millisecond
		}
		if sc.Text() == "Watching 1 service: bulk" {
			if event == 0 {
				b.Fatalf("watch --no-up bulk: no initial sync event before watching\n%s", stderr.String())
			}
			return time.Since(t0), event
		}
	}
	b.Fatalf("watch --no-up bulk ended before watching: %v\n%s", sc.Err(), stderr.String())
	return 0, 0
}

// idleCPU returns the CPU time that the process watch used over d, from
// /proc/PID/stat (utime+stime, in ticks of 10 ms) and from the threads'
// schedstat (in ns: an idle watch uses less than a tick), and that of the
// process qemu, from its threads' schedstat.
func idleCPU(b *testing.B, watch, qemu int, d time.Duration) (watchTicks, watchCPU, qemuCPU time.Duration) {
	t0, w0, q0 := cpuTime(b, watch), onCPU(b, watch), onCPU(b, qemu)
	time.Sleep(d)
	return cpuTime(b, watch) - t0, onCPU(b, watch) - w0, onCPU(b, qemu) - q0
}

// onCPU is the time the threads of pid have run, the first field of
// their /proc/PID/task/TID/schedstat.
func onCPU(b *testing.B, pid int) time.Duration {
	stats, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	if err != nil || len(stats) == 0 {
		b.Fatalf("no schedstat for %d: %v", pid, err)
	}
	var sum time.Duration
	for _, s := range stats {
		data, err := os.ReadFile(s)
		if err != nil {
			continue // a thread that ended
		}
		ns, _ := strconv.ParseInt(strings.Fields(string(data))[0], 10, 64)
		sum += time.Duration(ns)
	}
	return sum
}

// cpuTime is utime+stime of pid, from /proc/PID/stat in clock ticks of
// 10 ms (USER_HZ is 100 on Linux whatever the kernel's HZ).
func cpuTime(b *testing.B, pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command's ")" start at the 3rd, state; utime
	// and stime are the 14th and 15th.
	f := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+1:]))
	utime, _ := strconv.Atoi(f[11])
	stime, _ := strconv.Atoi(f[12])
	return time.Duration(utime+stime) * 10 * time.Millisecond
}
