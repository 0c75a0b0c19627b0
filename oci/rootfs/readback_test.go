package rootfs

import (
	"archive/tar"
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vmcompose/vmcompose/internal/testenv"
)

// fsFile is what a test compares for one path: read back from an ext4
// image with e2fsprogs, or computed from the layers by the model below.
type fsFile struct {
	typ    byte // tar typeflag: TypeReg, TypeDir, TypeSymlink, TypeChar, TypeBlock, TypeFifo
	perm   int64
	uid    int
	gid    int
	size   int64
	sha    string // regular files, when read
	target string
	major  int64
	minor  int64
	xattrs map[string]string
	mtime  time.Time
	ino    uint64 // image only
}

func (f *fsFile) String() string {
	var x []string
	for k, v := range f.xattrs {
		x = append(x, fmt.Sprintf("%s=%x", k, v))
	}
	sort.Strings(x)
	return fmt.Sprintf("type=%c perm=%#o owner=%d:%d size=%d sha=%.12s target=%q dev=%d:%d mtime=%s xattrs=%v",
		f.typ, f.perm, f.uid, f.gid, f.size, f.sha, f.target, f.major, f.minor, f.mtime.UTC().Format(time.RFC3339Nano), x)
}

func requireTool(t *testing.T, name string) {
	t.Helper()
	testenv.LookPath(t, name, "apt-get install e2fsprogs")
}

// fsck runs e2fsck -fn and fails the test unless it exits 0.
func fsck(t *testing.T, img string) {
	t.Helper()
	requireTool(t, "e2fsck")
	out, err := exec.Command("e2fsck", "-fn", img).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", img, err, out)
	}
}

// debugfsBatch runs the requests in one debugfs process and returns the
// output of each, in order.
func debugfsBatch(t *testing.T, img string, reqs []string) []string {
	t.Helper()
	requireTool(t, "debugfs")
	if len(reqs) == 0 {
		return nil
	}
	cmdFile := filepath.Join(t.TempDir(), "cmds")
	if err := os.WriteFile(cmdFile, []byte(strings.Join(reqs, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("debugfs", "-f", cmdFile, img).Output()
	if err != nil {
		t.Fatalf("debugfs -f: %v", err)
	}
	var res []string
	cur := -1
	var b strings.Builder
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "debugfs: ") && cur+1 < len(reqs) && line == "debugfs: "+reqs[cur+1] {
			if cur >= 0 {
				res = append(res, b.String())
			}
			b.Reset()
			cur++
			continue
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	res = append(res, b.String())
	if len(res) != len(reqs) {
		t.Fatalf("debugfs answered %d of %d requests", len(res), len(reqs))
	}
	return res
}

// readImage lists every path of an ext4 image with debugfs and reads the
// metadata, xattrs and (for files up to maxHash bytes) content hashes.
func readImage(t *testing.T, img string, maxHash int64) map[string]*fsFile {
	t.Helper()
	files := map[string]*fsFile{"/": {typ: tar.TypeDir}}
	dirs := []string{"/"}
	for len(dirs) > 0 {
		var reqs []string
		for _, d := range dirs {
			reqs = append(reqs, "ls -p "+d)
		}
		outs := debugfsBatch(t, img, reqs)
		dirs = nil
		for i, out := range outs {
			for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
				// /ino/mode/uid/gid/name/size/
				f := strings.Split(line, "/")
				if len(f) < 7 {
					continue
				}
				name := strings.Join(f[5:len(f)-2], "/")
				if name == "." || name == ".." {
					continue
				}
				p := path.Join(reqs[i][len("ls -p "):], name)
				ino, _ := strconv.ParseUint(f[1], 10, 64)
				files[p] = &fsFile{ino: ino}
				if mode, _ := strconv.ParseUint(f[2], 8, 32); mode&0o170000 == 0o040000 {
					dirs = append(dirs, p)
				}
			}
		}
	}
	paths := sortedPaths(files)
	var reqs []string
	for _, p := range paths {
		reqs = append(reqs, "stat "+p)
	}
	outs := debugfsBatch(t, img, reqs)
	dump := t.TempDir()
	var dumps, eas []string
	var dumpPaths, eaPaths, eaNames []string
	for i, p := range paths {
		f := files[p]
		parseStat(t, p, outs[i], f)
		if (f.typ == tar.TypeReg && f.size <= maxHash) || (f.typ == tar.TypeSymlink && f.target == "") {
			dumps = append(dumps, fmt.Sprintf("dump %s %s/%d", p, dump, len(dumps)))
			dumpPaths = append(dumpPaths, p)
		}
		for name := range f.xattrs {
			eas = append(eas, fmt.Sprintf("ea_get -f %s/ea%d %s %s", dump, len(eas), p, name))
			eaPaths = append(eaPaths, p)
			eaNames = append(eaNames, name)
		}
	}
	debugfsBatch(t, img, append(dumps, eas...))
	for i, p := range dumpPaths {
		b, err := os.ReadFile(fmt.Sprintf("%s/%d", dump, i))
		if err != nil {
			t.Fatalf("dumped %s: %v", p, err)
		}
		if files[p].typ == tar.TypeSymlink {
			files[p].target = string(b)
		} else {
			files[p].sha = sha(b)
		}
	}
	for i, p := range eaPaths {
		b, err := os.ReadFile(fmt.Sprintf("%s/ea%d", dump, i))
		if err != nil {
			t.Fatalf("xattr %s of %s: %v", eaNames[i], p, err)
		}
		files[p].xattrs[eaNames[i]] = string(b)
	}
	return files
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func sortedPaths[V any](m map[string]V) []string {
	var ps []string
	for p := range m {
		ps = append(ps, p)
	}
	sort.Strings(ps)
	return ps
}

// parseStat reads debugfs's `stat` output.
func parseStat(t *testing.T, p, out string, f *fsFile) {
	t.Helper()
	lines := strings.Split(out, "\n")
	inXattrs := false
	for _, line := range lines {
		if inXattrs {
			if strings.HasPrefix(line, "  ") {
				name, _, _ := strings.Cut(strings.TrimSpace(line), " (")
				f.xattrs[name] = ""
				continue
			}
			inXattrs = false
		}
		fields := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "Inode:"):
			typ := line[strings.Index(line, "Type:")+5 : strings.Index(line, "Mode:")]
			f.typ = map[string]byte{"regular": tar.TypeReg, "directory": tar.TypeDir, "symlink": tar.TypeSymlink,
				"character special": tar.TypeChar, "block special": tar.TypeBlock, "FIFO": tar.TypeFifo}[strings.TrimSpace(typ)]
			mode := strings.Fields(line[strings.Index(line, "Mode:")+5:])[0]
			f.perm, _ = strconv.ParseInt(mode, 8, 64)
		case strings.HasPrefix(line, "User:"):
			f.uid, _ = strconv.Atoi(fields[1])
			f.gid, _ = strconv.Atoi(fields[3])
			f.size, _ = strconv.ParseInt(fields[len(fields)-1], 10, 64)
		case strings.HasPrefix(line, " mtime:"):
			var lo, extra uint32
			if _, err := fmt.Sscanf(fields[1], "0x%x:%x", &lo, &extra); err != nil {
				t.Fatalf("%s: mtime %q: %v", p, fields[1], err)
			}
			sec := int64(int32(lo)) + int64(extra&3)<<32
			f.mtime = time.Unix(sec, int64(extra>>2))
		case strings.HasPrefix(line, "Fast link dest:"):
			f.target, _ = strconv.Unquote(strings.TrimSpace(line[len("Fast link dest:"):]))
		case strings.Contains(line, "Device major/minor number:"):
			s := strings.Fields(line[strings.Index(line, "number:")+7:])[0]
			if _, err := fmt.Sscanf(s, "%d:%d", &f.major, &f.minor); err != nil {
				t.Fatalf("%s: device %q: %v", p, s, err)
			}
		case line == "Extended attributes:":
			inXattrs = true
			f.xattrs = map[string]string{}
		}
	}
	if f.typ == 0 {
		t.Fatalf("%s: no type in stat output:\n%s", p, out)
	}
	if f.typ != tar.TypeReg {
		if f.typ != tar.TypeSymlink {
			f.size = 0
		}
	}
}

// layerTars returns the uncompressed tar streams of img, bottom first.
func layerTars(t *testing.T, img v1.Image) [][]byte {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	var tars [][]byte
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		tars = append(tars, b)
	}
	return tars
}
