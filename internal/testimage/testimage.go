package testimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/vmcompose/vmcompose/internal/testenv"
)

// BusyboxPath is where Debian's busybox-static installs the binary.
const BusyboxPath = "/bin/busybox"

// Epoch is the modification time of every entry the helpers make.
var Epoch = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// Entry is one tar entry of a layer. Header.Size is set from Data unless
// Open is given, in which case Header.Size must be set and Open must yield
// exactly that many bytes.
//
// An entry with Sparse set is written as a PAX (GNU 1.0) sparse file of
// logical size Header.Size whose only non-zero bytes are the chunks.
type Entry struct {
	Header tar.Header
	Data   []byte
	Open   func() io.Reader
	Sparse []Chunk
}

// Chunk is a run of data at an offset in a sparse file.
type Chunk struct {
	Offset int64
	Data   []byte
}

// Dir returns a directory entry.
func Dir(name string, mode int64) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: Epoch}}
}

// File returns a regular file entry owned by root.
func File(name string, mode int64, data string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, ModTime: Epoch}, Data: []byte(data)}
}

// Symlink returns a symbolic link entry.
func Symlink(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: Epoch}}
}

// Hardlink returns a hard link entry; target is a path in the image.
func Hardlink(name, target string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, ModTime: Epoch}}
}

// Whiteout returns the entry that deletes path from lower layers.
func Whiteout(path string) Entry {
	dir, base := "", path
	if i := strings.LastIndex(path, "/"); i >= 0 {
		dir, base = path[:i+1], path[i+1:]
	}
	return Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: dir + ".wh." + base, Mode: 0o600, ModTime: Epoch}}
}

// Opaque returns the entry that hides what lower layers put in dir.
func Opaque(dir string) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimSuffix(dir, "/") + "/.wh..wh..opq", Mode: 0o600, ModTime: Epoch}}
}

// Device returns a character (typeflag tar.TypeChar) or block device entry.
func Device(name string, typeflag byte, mode, major, minor int64) Entry {
	return Entry{Header: tar.Header{Typeflag: typeflag, Name: name, Mode: mode, Devmajor: major, Devminor: minor, ModTime: Epoch}}
}

// Fifo returns a named pipe entry.
func Fifo(name string, mode int64) Entry {
	return Entry{Header: tar.Header{Typeflag: tar.TypeFifo, Name: name, Mode: mode, ModTime: Epoch}}
}

// WithXattr returns e with an extended attribute in its PAX records.
func WithXattr(e Entry, name string, value []byte) Entry {
	recs := map[string]string{}
	for k, v := range e.Header.PAXRecords {
		recs[k] = v
	}
	recs["SCHILY.xattr."+name] = string(value)
	e.Header.PAXRecords = recs
	e.Header.Format = tar.FormatPAX
	return e
}

// Tar writes entries as one tar stream.
func Tar(t testing.TB, entries []Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Header
		if h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeRegA {
			if e.Open == nil && e.Sparse == nil {
				h.Size = int64(len(e.Data))
			}
		}
		if h.Format == tar.FormatUnknown && len(h.PAXRecords) > 0 {
			h.Format = tar.FormatPAX
		}
		if e.Sparse != nil {
			writeSparse(t, tw, &buf, h, e.Sparse)
			continue
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("tar header %s: %v", h.Name, err)
		}
		var r io.Reader = bytes.NewReader(e.Data)
		if e.Open != nil {
			r = e.Open()
		}
		if h.Size > 0 {
			if _, err := io.Copy(tw, r); err != nil {
				t.Fatalf("tar content %s: %v", h.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("closing tar: %v", err)
	}
	return buf.Bytes()
}

// Layer returns an OCI layer (gzip, computed once) holding the tar stream b.
func Layer(t testing.TB, b []byte) v1.Layer {
	t.Helper()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
	if err != nil {
		t.Fatalf("layer: %v", err)
	}
	return plainLayer{l}
}

// plainLayer hides the tarball layer's Descriptor method, whose empty
// annotations map would make Manifest() differ from the raw manifest.
type plainLayer struct{ v1.Layer }

// GzipLayer returns an OCI layer stored gzip-compressed (default level, as
// registries usually serve them), so that reading it uncompressed costs a
// real decompression.
func GzipLayer(t testing.TB, b []byte) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	gz := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatalf("layer: %v", err)
	}
	return plainLayer{l}
}

// Image returns an OCI image whose layers hold the given entries, bottom
// layer first.
func Image(t testing.TB, layers ...[]Entry) v1.Image {
	t.Helper()
	tars := make([][]byte, len(layers))
	for i, entries := range layers {
		tars[i] = Tar(t, entries)
	}
	return FromTars(t, tars...)
}

// FromTars returns an OCI image whose layers are the given tar streams.
func FromTars(t testing.TB, tars ...[]byte) v1.Image {
	t.Helper()
	layers := make([]v1.Layer, len(tars))
	for i, b := range tars {
		layers[i] = Layer(t, b)
	}
	return FromLayers(t, layers...)
}

// FromLayers returns an OCI image (linux/amd64, Cmd /bin/sh) with the given
// layers, bottom first.
func FromLayers(t testing.TB, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatalf("appending layers: %v", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Cmd = []string{"/bin/sh"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return img
}

// RequireBusybox returns the busybox binary, skipping the test when it is
// missing, or failing it in CI (testenv.Missing: CI must install
// busybox-static).
func RequireBusybox(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile(BusyboxPath)
	if err != nil {
		testenv.Missing(t, "%s not found (apt-get install busybox-static): %v", BusyboxPath, err)
	}
	return b
}

// BusyboxEntries returns the entries of a minimal busybox root: the usual
// directories, /bin/busybox, a symlink per applet (as `busybox --list-full`
// places them), /etc/passwd and /etc/group.
func BusyboxEntries(t testing.TB) []Entry {
	t.Helper()
	bin := RequireBusybox(t)
	out, err := exec.Command(BusyboxPath, "--list-full").Output()
	if err != nil {
		t.Fatalf("busybox --list-full: %v", err)
	}
	entries := []Entry{
		Dir("bin/", 0o755), Dir("sbin/", 0o755), Dir("usr/", 0o755), Dir("usr/bin/", 0o755),
		Dir("usr/sbin/", 0o755), Dir("etc/", 0o755), Dir("root/", 0o700), Dir("tmp/", 0o1777),
		Dir("dev/", 0o755), Dir("proc/", 0o555), Dir("sys/", 0o555), Dir("run/", 0o755),
		Dir("var/", 0o755),
		{Header: tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, ModTime: Epoch}, Data: bin},
		File("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"),
		File("etc/group", 0o644, "root:x:0:\nnogroup:x:65534:\n"),
	}
	for _, p := range strings.Fields(string(out)) {
		if p == "bin/busybox" || !strings.Contains(p, "/") {
			continue
		}
		entries = append(entries, Symlink(p, "/bin/busybox"))
	}
	return entries
}

// Busybox returns a one-layer OCI image with busybox and its applets.
func Busybox(t testing.TB) v1.Image {
	t.Helper()
	return Image(t, BusyboxEntries(t))
}

// LayeredEntries returns the three layers of Layered.
func LayeredEntries(t testing.TB) [][]Entry {
	t.Helper()
	base := BusyboxEntries(t)
	base = append(base,
		Dir("opt/", 0o755), Dir("opt/app/", 0o755),
		File("opt/app/config", 0o644, "from layer 1\n"),
		File("opt/app/old", 0o644, "hidden by the opaque directory\n"),
		Dir("opt/app/sub/", 0o755),
		File("opt/app/sub/deep", 0o644, "hidden too\n"),
		Dir("opt/gone/", 0o755),
		File("opt/gone/file", 0o644, "whole directory whited out\n"),
		File("etc/motd", 0o644, "deleted by layer 3\n"),
	)
	capability := []byte{0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0} // cap_net_raw+ep
	middle := []Entry{
		Dir("opt/", 0o755),
		Hardlink("bin/busybox-hardlink", "bin/busybox"),
		{Header: tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/setuid-tool", Mode: 0o4755, Uid: 0, Gid: 0, ModTime: Epoch}, Data: []byte("#!/bin/sh\necho setuid\n")},
		{Header: tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/setgid-tool", Mode: 0o2755, Uid: 1000, Gid: 50, ModTime: Epoch}, Data: []byte("#!/bin/sh\necho setgid\n")},
		WithXattr(File("usr/bin/ping-cap", 0o755, "#!/bin/sh\necho ping\n"), "security.capability", capability),
		Dir("dev/", 0o755),
		Device("dev/null", tar.TypeChar, 0o666, 1, 3),
		Device("dev/sda", tar.TypeBlock, 0o660, 8, 0),
		Fifo("run/initctl", 0o600),
		File("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n"),
		File("opt/app/config", 0o600, "from layer 2\n"),
	}
	top := []Entry{
		Whiteout("etc/motd"),
		Whiteout("opt/gone"),
		Whiteout("bin/vi"),
		Opaque("opt/app"),
		File("opt/app/new", 0o644, "only file in the opaque directory\n"),
		Hardlink("usr/bin/ping-cap-link", "usr/bin/ping-cap"),
		File("usr/bin/setgid-tool", 0o2711, "#!/bin/sh\necho replaced\n"),
	}
	return [][]Entry{base, middle, top}
}

// Layered returns a three-layer OCI image: busybox at the bottom, then a
// layer that adds a hard link to a lower file, setuid and setgid files, a
// security.capability xattr, device nodes and a fifo and replaces
// /etc/passwd, then a layer that whites out a file, a directory and an
// applet (/bin/vi), makes /opt/app opaque and adds a hard link across layers.
func Layered(t testing.TB) v1.Image {
	t.Helper()
	return Image(t, LayeredEntries(t)...)
}

// sparseKeyStandIn has the length of "GNU.sparse." so that the PAX records
// can be written by archive/tar (which refuses GNU.sparse.* keys) and
// renamed in place afterwards.
const sparseKeyStandIn = "VMCsparseX."

func writeSparse(t testing.TB, tw *tar.Writer, buf *bytes.Buffer, h tar.Header, chunks []Chunk) {
	t.Helper()
	realName, realSize := h.Name, h.Size
	m := fmt.Sprintf("%d\n", len(chunks))
	var dataLen int64
	for _, c := range chunks {
		m += fmt.Sprintf("%d\n%d\n", c.Offset, len(c.Data))
		dataLen += int64(len(c.Data))
	}
	mb := make([]byte, (len(m)+511)/512*512)
	copy(mb, m)
	recs := map[string]string{}
	for k, v := range h.PAXRecords {
		recs[k] = v
	}
	recs[sparseKeyStandIn+"major"] = "1"
	recs[sparseKeyStandIn+"minor"] = "0"
	recs[sparseKeyStandIn+"name"] = realName
	recs[sparseKeyStandIn+"realsize"] = fmt.Sprint(realSize)
	h.PAXRecords = recs
	h.Format = tar.FormatPAX
	h.Typeflag = tar.TypeReg
	h.Name = path.Join(path.Dir(realName), "GNUSparseFile.0", path.Base(realName))
	h.Size = int64(len(mb)) + dataLen
	if err := tw.Flush(); err != nil {
		t.Fatal(err)
	}
	start := buf.Len()
	if err := tw.WriteHeader(&h); err != nil {
		t.Fatalf("tar header %s: %v", realName, err)
	}
	hdrBytes := buf.Bytes()[start:]
	copy(hdrBytes, bytes.ReplaceAll(hdrBytes, []byte(sparseKeyStandIn), []byte("GNU.sparse.")))
	if _, err := tw.Write(mb); err != nil {
		t.Fatal(err)
	}
	for _, c := range chunks {
		if _, err := tw.Write(c.Data); err != nil {
			t.Fatal(err)
		}
	}
}
