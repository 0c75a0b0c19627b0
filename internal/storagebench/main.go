//go:build linux

package main

import (
	"bufio"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Result is the line storagebench prints; durations are in seconds.
type Result struct {
	Dir     string  `json:"dir"`
	FS      string  `json:"fs"`      // the type of the mount holding Dir, as in /proc/self/mountinfo
	Bytes   int64   `json:"bytes"`   // the size of the sequential file
	Dropped string  `json:"dropped"` // how the file left the page cache before the read
	Cached  float64 `json:"cached"`  // the fraction of it still cached then (mincore)
	Write   float64 `json:"write_s"` // writing it, fsync included
	Read    float64 `json:"read_s"`
	Files   int     `json:"files"`
	Create  float64 `json:"create_s"`
	Stat    float64 `json:"stat_s"`
	Delete  float64 `json:"delete_s"`
}

func main() {
	dir := flag.String("dir", "", "the directory to work in (made if missing; what storagebench makes there is removed)")
	mib := flag.Int("mib", 256, "size of the sequential file in MiB")
	files := flag.Int("files", 10000, "number of small files")
	drop := flag.Bool("drop-caches", false, "drop the whole page cache (echo 3 > /proc/sys/vm/drop_caches) before the read, as well as the file's pages")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "storagebench: -dir is required")
		os.Exit(2)
	}
	r, err := run(*dir, int64(*mib)<<20, *files, *drop)
	if err != nil {
		fmt.Fprintln(os.Stderr, "storagebench:", err)
		os.Exit(1)
	}
	json.NewEncoder(os.Stdout).Encode(r)
}

func run(dir string, size int64, files int, drop bool) (*Result, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	work, err := os.MkdirTemp(dir, "storagebench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	fs, err := fsType(work)
	if err != nil {
		return nil, err
	}
	r := &Result{Dir: dir, FS: fs, Bytes: size, Files: files}
	big := filepath.Join(work, "big")
	if r.Write, err = timed(func() error { return write(big, size) }); err != nil {
		return nil, err
	}
	if r.Dropped, err = evict(big, drop); err != nil {
		return nil, err
	}
	if r.Cached, err = cached(big, size); err != nil {
		return nil, err
	}
	if r.Read, err = timed(func() error { return read(big, size) }); err != nil {
		return nil, err
	}
	if err := os.Remove(big); err != nil {
		return nil, err
	}
	small := filepath.Join(work, "small")
	if err := os.Mkdir(small, 0o755); err != nil {
		return nil, err
	}
	names := make([]string, files)
	for i := range names {
		names[i] = filepath.Join(small, fmt.Sprintf("f%05d", i))
	}
	if r.Create, err = timed(func() error { return each(names, create) }); err != nil {
		return nil, err
	}
	if r.Stat, err = timed(func() error { return each(names, stat) }); err != nil {
		return nil, err
	}
	if r.Delete, err = timed(func() error { return each(names, os.Remove) }); err != nil {
		return nil, err
	}
	return r, nil
}

func timed(f func() error) (float64, error) {
	t0 := time.Now()
	err := f()
	return time.Since(t0).Seconds(), err
}

// write writes size bytes of random data (nothing on the way can
// compress it or skip zeros) in 1 MiB chunks, then fsyncs.
func write(path string, size int64) error {
	buf := make([]byte, 1<<20)
	rand.Read(buf)
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	for n := int64(0); n < size; n += int64(len(buf)) {
		if _, err := f.Write(buf[:min(int64(len(buf)), size-n)]); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// evict drops path from the page cache, so that the read reaches the
// storage: its own pages with POSIX_FADV_DONTNEED (they are clean after
// the fsync) and, with all, the whole page cache, which a guest may do to
// itself but a host shared with other work should not.
func evict(path string, all bool) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return "", fmt.Errorf("fadvise %s: %w", path, err)
	}
	if !all {
		return "fadvise", nil
	}
	unix.Sync()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0); err != nil {
		return "", fmt.Errorf("dropping the page cache: %w", err)
	}
	return "drop_caches", nil
}

// cached is the fraction of path's pages in the page cache.
func cached(path string, size int64) (float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	m, err := unix.Mmap(int(f.Fd()), 0, int(size), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, fmt.Errorf("mmap %s: %w", path, err)
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	// x/sys/unix has no wrapper for mincore(2).
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		return 0, fmt.Errorf("mincore %s: %w", path, e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return float64(n) / float64(len(vec)), nil
}

func read(path string, size int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		m, err := f.Read(buf)
		n += int64(m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
	}
	if n != size {
		return fmt.Errorf("read %d bytes of %s, wrote %d", n, path, size)
	}
	return nil
}

func each(names []string, f func(string) error) error {
	for _, n := range names {
		if err := f(n); err != nil {
			return err
		}
	}
	return nil
}

// smallData is what each small file holds.
var smallData = []byte(strings.Repeat("x", 100))

func create(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(smallData); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func stat(path string) error {
	fi, err := os.Lstat(path)
	if err == nil && fi.Size() != int64(len(smallData)) {
		err = fmt.Errorf("%s: size %d, wrote %d", path, fi.Size(), len(smallData))
	}
	return err
}

// fsType is the type of the mount that holds path: that of the longest
// mount point in /proc/self/mountinfo that contains it.
func fsType(path string) (string, error) {
	path, err := filepath.EvalSymlinks(path)
	if err != nil {
		return "", err
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	best, typ := "", ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// ID parent major:minor root mountpoint options [optional...] - type source superoptions
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, f := range fields {
			if f == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		mp := unescape(fields[4])
		if within(path, mp) && len(mp) >= len(best) {
			best, typ = mp, fields[sep+1]
		}
	}
	if typ == "" {
		return "", fmt.Errorf("no mount holds %s in /proc/self/mountinfo", path)
	}
	return typ, sc.Err()
}

func within(path, dir string) bool {
	return dir == "/" || path == dir || strings.HasPrefix(path, dir+"/")
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	r := strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`)
	return r.Replace(s)
}
