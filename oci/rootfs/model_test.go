package rootfs

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"path"
	"strings"
	"testing"
	"time"
)

// flattenModel applies the layers with plain path-string rules, as simply
// as the OCI image spec reads: no tree, no symlink resolution (test images
// with symlinked parents check those paths by hand). Hard-linked paths share
// one *fsFile. Content hashes are kept for files up to maxHash bytes.
func flattenModel(t *testing.T, tars [][]byte, maxHash int64) map[string]*fsFile {
	t.Helper()
	files := map[string]*fsFile{
		"/":           {typ: tar.TypeDir, perm: 0o755},
		"/lost+found": {typ: tar.TypeDir, perm: 0o700},
	}
	layerOf := map[string]int{"/": -1, "/lost+found": -1}
	under := func(k, p string) bool { return k == p || strings.HasPrefix(k, p+"/") || p == "/" && k != "/" }
	for L, b := range tars {
		tr := tar.NewReader(bytes.NewReader(b))
		for {
			hdr, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			p := path.Clean("/" + hdr.Name)
			dir, base := path.Split(p)
			dir = path.Clean(dir)
			if base == ".wh..wh..opq" {
				for k := range files {
					if k != dir && under(k, dir) && layerOf[k] < L {
						delete(files, k)
					}
				}
				continue
			}
			if name, ok := strings.CutPrefix(base, ".wh."); ok {
				victim := path.Join(dir, name)
				if _, ok := files[victim]; ok && layerOf[victim] < L {
					for k := range files {
						if under(k, victim) {
							delete(files, k)
						}
					}
				}
				continue
			}
			f := &fsFile{
				typ: hdr.Typeflag, perm: hdr.Mode & 0o7777, uid: hdr.Uid, gid: hdr.Gid,
				mtime: hdr.ModTime, target: hdr.Linkname, major: hdr.Devmajor, minor: hdr.Devminor,
			}
			for k, v := range hdr.PAXRecords {
				if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
					if f.xattrs == nil {
						f.xattrs = map[string]string{}
					}
					f.xattrs[name] = v
				}
			}
			switch hdr.Typeflag {
			case tar.TypeReg, tar.TypeRegA:
				f.typ = tar.TypeReg
				h := sha256.New()
				var dst io.Writer = h
				if hdr.Size > maxHash {
					dst = io.Discard
				}
				n, err := io.Copy(dst, tr)
				if err != nil {
					t.Fatal(err)
				}
				f.size = n
				if n <= maxHash {
					f.sha = hex.EncodeToString(h.Sum(nil))
				}
			case tar.TypeSymlink:
				f.size = int64(len(f.target))
			default:
				f.target = ""
			}
			if p == "/" {
				if hdr.Typeflag == tar.TypeDir {
					files["/"] = f
				}
				continue
			}
			for a := dir; a != "/"; a = path.Dir(a) {
				if files[a] == nil {
					files[a] = &fsFile{typ: tar.TypeDir, perm: 0o755}
				}
				layerOf[a] = L
			}
			if old := files[p]; old != nil && old.typ == tar.TypeDir && f.typ == tar.TypeDir {
				files[p] = f
				layerOf[p] = L
				continue
			}
			for k := range files {
				if under(k, p) {
					delete(files, k)
				}
			}
			if hdr.Typeflag == tar.TypeLink {
				target := files[path.Clean("/"+hdr.Linkname)]
				if target == nil {
					t.Fatalf("model: hard link %s to missing %s", p, hdr.Linkname)
				}
				files[p] = target
			} else {
				files[p] = f
			}
			layerOf[p] = L
		}
	}
	return files
}

// compareTrees reports every difference between want (the model) and got
// (read back from the image), including hard-link identity.
func compareTrees(t *testing.T, want, got map[string]*fsFile) {
	t.Helper()
	errs := 0
	fail := func(format string, args ...any) {
		t.Helper()
		if errs++; errs <= 30 {
			t.Errorf(format, args...)
		}
	}
	for _, p := range sortedPaths(want) {
		if got[p] == nil {
			fail("%s: missing from the image (want %v)", p, want[p])
		}
	}
	for _, p := range sortedPaths(got) {
		if want[p] == nil {
			fail("%s: in the image but not in the layers (%v)", p, got[p])
		}
	}
	inoOf := map[*fsFile]uint64{}
	fileOf := map[uint64]*fsFile{}
	for _, p := range sortedPaths(want) {
		w, g := want[p], got[p]
		if g == nil {
			continue
		}
		wm := w.mtime
		if wm.IsZero() {
			wm = time.Unix(0, 0)
		}
		if g.typ != w.typ || g.perm != w.perm || g.uid != w.uid || g.gid != w.gid || !g.mtime.Equal(wm) ||
			(w.typ == tar.TypeReg || w.typ == tar.TypeSymlink) && g.size != w.size ||
			w.sha != "" && g.sha != w.sha || g.target != w.target ||
			(w.typ == tar.TypeChar || w.typ == tar.TypeBlock) && (g.major != w.major || g.minor != w.minor) ||
			!sameXattrs(w.xattrs, g.xattrs) {
			fail("%s:\n got %v\nwant %v", p, g, w)
		}
		if w.typ == tar.TypeDir {
			continue
		}
		if ino, ok := inoOf[w]; ok && ino != g.ino {
			fail("%s: inode %d, want %d (hard link)", p, g.ino, ino)
		}
		inoOf[w] = g.ino
		if f, ok := fileOf[g.ino]; ok && f != w {
			fail("%s: shares inode %d with a file it is not linked to", p, g.ino)
		}
		fileOf[g.ino] = w
	}
	if errs > 30 {
		t.Errorf("... and %d more differences", errs-30)
	}
}

func sameXattrs(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}
