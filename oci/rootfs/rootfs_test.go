package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

const maxHash = 64 << 20

// build runs Build into a fresh directory and checks the result with
// e2fsck.
func build(t *testing.T, img v1.Image, opts ...Option) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "rootfs.ext4")
	if err := Build(context.Background(), img, dst, opts...); err != nil {
		t.Fatalf("Build: %v", err)
	}
	fsck(t, dst)
	return dst
}

// checkAgainstModel compares the image with the independent flattening
// model and returns what was read back.
func checkAgainstModel(t *testing.T, img v1.Image, dst string) map[string]*fsFile {
	t.Helper()
	want := flattenModel(t, layerTars(t, img), maxHash)
	got := readImage(t, dst, maxHash)
	compareTrees(t, want, got)
	return got
}

func TestBuildBusybox(t *testing.T) {
	img := testimage.Busybox(t)
	dst := build(t, img)
	got := checkAgainstModel(t, img, dst)
	if f := got["/bin/sh"]; f == nil || f.typ != tar.TypeSymlink || f.target != "/bin/busybox" {
		t.Errorf("/bin/sh = %v, want a symlink to /bin/busybox", f)
	}
	bb, _ := os.ReadFile(testimage.BusyboxPath)
	if f := got["/bin/busybox"]; f == nil || f.sha != sha(bb) || f.perm != 0o755 {
		t.Errorf("/bin/busybox = %v, want the host's busybox, mode 0755", f)
	}
	if f := got["/tmp"]; f == nil || f.perm != 0o1777 {
		t.Errorf("/tmp = %v, want mode 01777", f)
	}

	// Same image, same bytes.
	again := build(t, img)
	a, _ := os.ReadFile(dst)
	b, _ := os.ReadFile(again)
	if !bytes.Equal(a, b) {
		t.Errorf("two builds of the same image differ")
	}
}

func TestBuildBenchImage(t *testing.T) {
	if testing.Short() {
		t.Skip("100 MB image")
	}
	img, _ := benchImage(t)
	dst := build(t, img)
	checkAgainstModel(t, img, dst)
}

func TestBuildLayered(t *testing.T) {
	img := testimage.Layered(t)
	dst := build(t, img)
	got := checkAgainstModel(t, img, dst)

	// Spot checks written out by hand, in case the model and Build share a
	// misreading of the spec.
	for _, p := range []string{"/etc/motd", "/opt/gone", "/opt/gone/file", "/bin/vi", "/opt/app/old", "/opt/app/sub", "/opt/app/config"} {
		if got[p] != nil {
			t.Errorf("%s survived its whiteout: %v", p, got[p])
		}
	}
	if f := got["/opt/app/new"]; f == nil || f.typ != tar.TypeReg {
		t.Errorf("/opt/app/new = %v, want the file added with the opaque marker", f)
	}
	if got["/bin/busybox"].ino != got["/bin/busybox-hardlink"].ino {
		t.Errorf("hard link to a lower layer's file is a separate inode")
	}
	if got["/usr/bin/ping-cap"].ino != got["/usr/bin/ping-cap-link"].ino {
		t.Errorf("hard link to the middle layer's file is a separate inode")
	}
	capability := "\x01\x00\x00\x02\x00\x20\x00\x00" + strings.Repeat("\x00", 12)
	if v := got["/usr/bin/ping-cap"].xattrs["security.capability"]; v != capability {
		t.Errorf("security.capability = %x, want %x", v, capability)
	}
	if f := got["/usr/bin/setuid-tool"]; f.perm != 0o4755 {
		t.Errorf("setuid-tool mode %#o, want 04755", f.perm)
	}
	if f := got["/usr/bin/setgid-tool"]; f.perm != 0o2711 || f.uid != 0 {
		t.Errorf("setgid-tool = %v, want the top layer's 02711 root file", f)
	}
	if f := got["/dev/null"]; f.typ != tar.TypeChar || f.major != 1 || f.minor != 3 {
		t.Errorf("/dev/null = %v", f)
	}
	if f := got["/run/initctl"]; f.typ != tar.TypeFifo {
		t.Errorf("/run/initctl = %v, want a fifo", f)
	}
}

// edgeCaseImage has long names and paths, a slow symlink, a nanosecond
// mtime, a file of zeros, big ids, a 5 GiB sparse file, xattrs in the inode
// and in a block, a POSIX ACL and a device with a big minor number.
func edgeCaseImage(t *testing.T) v1.Image {
	long := strings.Repeat("a-very-long-name-", 14) // 238 bytes
	deep := ""
	for i := range 40 {
		deep += fmt.Sprintf("level-%02d-directory/", i) // 760+ bytes of path
	}
	nsec := testimage.File("nsec", 0o640, "nanoseconds\n")
	nsec.Header.ModTime = edgeMtime
	nsec.Header.Format = tar.FormatPAX
	zeros := testimage.File("zeros", 0o644, string(make([]byte, 3<<20))+"end")
	owner := testimage.File("owner", 0o600, "big ids\n")
	owner.Header.Uid, owner.Header.Gid = 100000, 200000
	sparse := testimage.Entry{
		Header: tar.Header{Typeflag: tar.TypeReg, Name: "sparse/big", Size: bigSize, Mode: 0o644, ModTime: testimage.Epoch},
		Sparse: []testimage.Chunk{{Offset: 1 << 20, Data: []byte("first")}, {Offset: 4<<30 + 100, Data: bytes.Repeat([]byte("x"), 10000)}},
	}
	// user::rw- user:1000:rwx group::r-- mask::rwx other::r--; debugfs
	// reads the unnamed entries back with id 0.
	acl := []byte{2, 0, 0, 0, 1, 0, 6, 0, 0, 0, 0, 0, 2, 0, 7, 0, 0xe8, 3, 0, 0,
		4, 0, 4, 0, 0, 0, 0, 0, 0x10, 0, 7, 0, 0, 0, 0, 0, 0x20, 0, 4, 0, 0, 0, 0, 0}
	return testimage.Image(t, []testimage.Entry{
		testimage.File(long, 0o644, "long name\n"),
		testimage.File(deep+long, 0o644, "deep and long\n"),
		testimage.Symlink("long-link", strings.Repeat("../", 30)+long),
		nsec, zeros, owner, sparse,
		testimage.WithXattr(testimage.WithXattr(testimage.File("attrs", 0o644, "x"), "user.one", []byte("1")), "trusted.big", bytes.Repeat([]byte("v"), 1000)),
		testimage.WithXattr(testimage.File("acl", 0o644, "x"), "system.posix_acl_access", acl),
		testimage.Device("disk", tar.TypeBlock, 0o660, 259, 70000),
	})
}

const bigSize = 5<<30 + 12345

var edgeMtime = time.Date(2031, 7, 8, 9, 10, 11, 123456789, time.UTC)

func TestBuildEdgeCases(t *testing.T) {
	img := edgeCaseImage(t)
	dst := build(t, img)
	got := checkAgainstModel(t, img, dst)
	if f := got["/sparse/big"]; f == nil || f.size != bigSize {
		t.Fatalf("/sparse/big = %v, want %d bytes", f, int64(bigSize))
	}
	// The sparse file keeps its holes: two short runs of data, nothing else.
	out := debugfsBatch(t, dst, []string{"stat /sparse/big"})[0]
	ext := regexp.MustCompile(`\((\d+)(?:-(\d+))?\):(\d+)`).FindAllStringSubmatch(out, -1)
	if len(ext) != 2 {
		t.Fatalf("/sparse/big extents %q, want two", ext)
	}
	img4k, err := os.Open(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer img4k.Close()
	for i, want := range []struct {
		logical int64
		at      int64
		data    string
	}{{256, 0, "first"}, {(4<<30 + 100) / 4096, 100, strings.Repeat("x", 10000-4096+100)}} {
		logical, _ := strconv.ParseInt(ext[i][1], 10, 64)
		phys, _ := strconv.ParseInt(ext[i][3], 10, 64)
		if logical != want.logical {
			t.Errorf("extent %d starts at file block %d, want %d", i, logical, want.logical)
		}
		b := make([]byte, len(want.data))
		if _, err := img4k.ReadAt(b, phys*4096+want.at); err != nil || string(b[:5]) != want.data[:5] {
			t.Errorf("extent %d data %q, want %q (%v)", i, b[:5], want.data[:5], err)
		}
	}
	if f := got["/nsec"]; !f.mtime.Equal(edgeMtime) {
		t.Errorf("mtime %s, want %s", f.mtime, edgeMtime)
	}
	// An all-zero run is a hole, not allocated.
	out = debugfsBatch(t, dst, []string{"stat /zeros"})[0]
	if !strings.Contains(out, "Blockcount: 8\n") {
		t.Errorf("/zeros should use one block:\n%s", out)
	}
}

func TestBuildHostile(t *testing.T) {
	sentinelDir := t.TempDir()
	sentinel := filepath.Join(sentinelDir, "sentinel")
	if err := os.WriteFile(sentinel, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	marker := fmt.Sprintf("vmcompose-hostile-%d", time.Now().UnixNano())
	rel, err := filepath.Rel("/", sentinelDir)
	if err != nil {
		t.Fatal(err)
	}
	hostTmpBefore, _ := os.ReadDir(os.TempDir())
	img := testimage.Image(t,
		[]testimage.Entry{
			testimage.Dir("etc/", 0o755),
			testimage.File("etc/keep", 0o644, "lower\n"),
			testimage.File("x", 0o644, "deleted by ../x whiteout\n"),
			testimage.File("tmp-"+marker, 0o644, "kept\n"),
		},
		[]testimage.Entry{
			testimage.File("../../etc/"+marker, 0o644, "traversal\n"),
			testimage.File("/tmp/"+marker+"-abs", 0o644, "absolute\n"),
			testimage.File(strings.Repeat("../", 20)+rel+"/sentinel", 0o644, "overwrite attempt\n"),
			testimage.Symlink("escape", "../../../../../../tmp"),
			testimage.File("escape/"+marker+"-through", 0o644, "through the symlink\n"),
			testimage.Symlink("abs", "/"+rel),
			testimage.File("abs/sentinel", 0o644, "through an absolute symlink\n"),
			testimage.Whiteout("../x"),
			testimage.Whiteout("../../etc/keep"),
		},
	)
	dst := build(t, img)

	if b, err := os.ReadFile(sentinel); err != nil || string(b) != "untouched" {
		t.Fatalf("host sentinel changed: %q, %v", b, err)
	}
	for _, p := range []string{"/etc/" + marker, "/tmp/" + marker + "-abs", "/tmp/" + marker + "-through", "/" + marker} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("host path %s exists (%v)", p, err)
		}
	}
	hostTmpAfter, _ := os.ReadDir(os.TempDir())
	if len(hostTmpAfter) > len(hostTmpBefore) {
		for _, e := range hostTmpAfter {
			if strings.Contains(e.Name(), marker) {
				t.Errorf("%s appeared in the host's temp dir", e.Name())
			}
		}
	}

	got := readImage(t, dst, maxHash)
	for p, want := range map[string]string{
		"/etc/" + marker:              "traversal\n",
		"/tmp/" + marker + "-abs":     "absolute\n",
		"/" + rel + "/sentinel":       "through an absolute symlink\n",
		"/tmp/" + marker + "-through": "through the symlink\n",
		"/tmp-" + marker:              "kept\n",
	} {
		if f := got[p]; f == nil || f.sha != sha([]byte(want)) {
			t.Errorf("image %s = %v, want a file with %q", p, f, want)
		}
	}
	for _, p := range []string{"/x", "/etc/keep"} {
		if got[p] != nil {
			t.Errorf("image %s survived its whiteout", p)
		}
	}
}

func TestBuildMaxSize(t *testing.T) {
	img := testimage.Image(t,
		[]testimage.Entry{testimage.File("small", 0o644, "small")},
		[]testimage.Entry{testimage.File("big", 0o644, strings.Repeat("z", 3<<20))},
	)
	layers, _ := img.Layers()
	bigDigest, _ := layers[1].Digest()
	dir := t.TempDir()
	dst := filepath.Join(dir, "rootfs.ext4")
	err := Build(context.Background(), img, dst, WithMaxSize(2<<20))
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), bigDigest.String()) {
		t.Fatalf("Build with a 2 MiB limit: %v, want ErrTooLarge naming %s", err, bigDigest)
	}
	assertEmptyDir(t, dir)

	// A sparse entry counts with its logical size.
	sparse := testimage.Image(t, []testimage.Entry{{
		Header: tar.Header{Typeflag: tar.TypeReg, Name: "bomb", Size: 1 << 40, Mode: 0o644},
		Sparse: []testimage.Chunk{{Offset: 0, Data: []byte("x")}},
	}})
	if err := Build(context.Background(), sparse, dst); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Build of a 1 TiB sparse file: %v, want ErrTooLarge", err)
	}
	assertEmptyDir(t, dir)

	// So do tar headers: many empty files inflate the stream, not content.
	var empties []testimage.Entry
	for i := range 5000 {
		empties = append(empties, testimage.File(fmt.Sprintf("e%d", i), 0o644, ""))
	}
	err = Build(context.Background(), testimage.Image(t, empties), dst, WithMaxSize(1<<20))
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "uncompressed layers") {
		t.Fatalf("Build of 5000 empty files with a 1 MiB limit: %v, want ErrTooLarge", err)
	}
	assertEmptyDir(t, dir)

	if err := Build(context.Background(), img, dst, WithMaxSize(0)); err == nil {
		t.Fatal("WithMaxSize(0) accepted")
	}
}

func TestBuildCancel(t *testing.T) {
	img := testimage.Image(t, []testimage.Entry{testimage.File("f", 0o644, "x")})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir := t.TempDir()
	err := Build(ctx, img, filepath.Join(dir, "rootfs.ext4"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Build with a cancelled context: %v", err)
	}
	assertEmptyDir(t, dir)
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left behind in %s: %s", dir, e.Name())
	}
}

func TestBuildXattrRules(t *testing.T) {
	img := testimage.Image(t, []testimage.Entry{
		testimage.WithXattr(testimage.WithXattr(testimage.File("f", 0o644, "x"), "com.apple.quarantine", []byte("q")), "user.kept", []byte("k")),
	})
	got := readImage(t, build(t, img), maxHash)
	if x := got["/f"].xattrs; len(x) != 1 || x["user.kept"] != "k" {
		t.Errorf("xattrs %q: want only user.kept (ext4 has no other name spaces)", x)
	}

	huge := testimage.Image(t, []testimage.Entry{
		testimage.WithXattr(testimage.File("huge", 0o644, "x"), "user.huge", make([]byte, 5000)),
	})
	err := Build(context.Background(), huge, filepath.Join(t.TempDir(), "rootfs.ext4"))
	if err == nil || !strings.Contains(err.Error(), "entry huge:") {
		t.Fatalf("Build with a 5000-byte xattr: %v, want an error naming the entry", err)
	}
}

func TestBuildRejects(t *testing.T) {
	for name, tc := range map[string]struct {
		entries []testimage.Entry
		want    string
	}{
		"symlink loop": {[]testimage.Entry{
			testimage.Symlink("l1", "l2"), testimage.Symlink("l2", "/l1"), testimage.File("l1/x", 0o644, "x"),
		}, "entry l1/x: resolving /l1: too many levels of symbolic links"},
		"file as parent": {[]testimage.Entry{
			testimage.File("f", 0o644, "x"), testimage.File("f/x", 0o644, "x"),
		}, "entry f/x: resolving /f: f is not a directory"},
		"missing hard link target": {[]testimage.Entry{
			testimage.Hardlink("h", "nowhere"),
		}, "entry h: hard link target nowhere: not found"},
		"hard link to a directory": {[]testimage.Entry{
			testimage.Dir("d", 0o755), testimage.Hardlink("h", "d"),
		}, "entry h: hard link target d: is a directory"},
		"name too long": {[]testimage.Entry{
			testimage.File(strings.Repeat("n", 256), 0o644, "x"),
		}, "longer than 255 bytes"},
		"parent name too long": {[]testimage.Entry{
			testimage.File(strings.Repeat("n", 256)+"/f", 0o644, "x"),
		}, "longer than 255 bytes"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			err := Build(context.Background(), testimage.Image(t, tc.entries), filepath.Join(dir, "rootfs.ext4"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Build: %v, want an error containing %q", err, tc.want)
			}
			assertEmptyDir(t, dir)
		})
	}
}

// A file an upper layer deletes must not stay readable in the image's free
// blocks: the VM's root could read the raw disk.
func TestBuildLeavesNoDeletedContent(t *testing.T) {
	secret := strings.Repeat("SECRET-0123456789", 20000) // more blocks than the metadata reuses
	img := testimage.Image(t,
		[]testimage.Entry{testimage.File("build/secret", 0o600, secret), testimage.File("keep", 0o644, "kept")},
		[]testimage.Entry{testimage.Whiteout("build")},
	)
	dst := build(t, img)
	raw, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte("SECRET-")) {
		t.Fatal("deleted file content is still in the image")
	}
	if !bytes.Contains(raw, []byte("kept")) {
		t.Fatal("kept file content not found: the check above cannot work")
	}
}
