package rootfs

import (
	"archive/tar"
	"fmt"
	"io"
	"path"
	"strings"
	"time"

	"github.com/vmcompose/vmcompose/oci/rootfs/internal/ext4"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	opaqueMarker   = ".wh..wh..opq"
	maxSymlinkHops = 40
)

// tree is the flattened file system built so far. File contents are already
// in the image; the tree holds metadata and placement only.
type tree struct {
	w     *ext4.Writer
	root  *ext4.Inode
	layer map[*ext4.Inode]int // the layer that last created or touched a node
	links map[*ext4.Inode]int // names pointing at a regular file
}

func newTree(w *ext4.Writer) *tree {
	root := &ext4.Inode{Mode: ext4.ModeDir | 0o755, Entries: map[string]*ext4.Inode{}}
	return &tree{w: w, root: root, layer: map[*ext4.Inode]int{root: -1}, links: map[*ext4.Inode]int{}}
}

// splitPath cleans name relative to the image root and returns its parent
// components and base name; base is "" for the root itself.
func splitPath(name string) (dir []string, base string) {
	p := path.Clean("/" + name)
	if p == "/" {
		return nil, ""
	}
	parts := strings.Split(p[1:], "/")
	return parts[:len(parts)-1], parts[len(parts)-1]
}

// resolveDir walks components from the root, following symlinks inside the
// image. With create it makes missing directories and marks every directory
// it passes as touched by layer; without, it returns nil when the path does
// not lead to a directory.
func (t *tree) resolveDir(comps []string, create bool, layer int) (*ext4.Inode, error) {
	stack := []*ext4.Inode{t.root}
	todo := append([]string(nil), comps...)
	hops := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		cur := stack[len(stack)-1]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) > 1 {
				stack = stack[:len(stack)-1]
			}
			continue
		}
		child := cur.Entries[c]
		switch {
		case child == nil:
			if !create {
				return nil, nil
			}
			if len(c) > 255 {
				return nil, fmt.Errorf("directory name %q: longer than 255 bytes", c)
			}
			child = &ext4.Inode{Mode: ext4.ModeDir | 0o755, Entries: map[string]*ext4.Inode{}}
			cur.Entries[c] = child
		case child.Mode&ext4.ModeType == ext4.ModeLink:
			hops++
			if hops > maxSymlinkHops {
				return nil, fmt.Errorf("resolving %s: too many levels of symbolic links", "/"+strings.Join(comps, "/"))
			}
			target := child.Symlink
			if strings.HasPrefix(target, "/") {
				stack = stack[:1]
			}
			todo = append(strings.Split(target, "/"), todo...)
			continue
		case child.Mode&ext4.ModeType != ext4.ModeDir:
			if !create {
				return nil, nil
			}
			return nil, fmt.Errorf("resolving %s: %s is not a directory", "/"+strings.Join(comps, "/"), c)
		}
		if create {
			t.layer[child] = layer
		}
		stack = append(stack, child)
	}
	return stack[len(stack)-1], nil
}

// remove deletes name from dir and gives back the blocks of files that lose
// their last name.
func (t *tree) remove(dir *ext4.Inode, name string) {
	child := dir.Entries[name]
	if child == nil {
		return
	}
	delete(dir.Entries, name)
	t.release(child)
}

func (t *tree) release(n *ext4.Inode) {
	switch n.Mode & ext4.ModeType {
	case ext4.ModeDir:
		for _, c := range n.Entries {
			t.release(c)
		}
		delete(t.layer, n)
	case ext4.ModeReg:
		t.links[n]--
		if t.links[n] > 0 {
			return
		}
		delete(t.links, n)
		delete(t.layer, n)
		if n.Data != nil {
			t.w.Free(n.Data)
		}
	default:
		t.links[n]--
		if t.links[n] <= 0 {
			delete(t.links, n)
			delete(t.layer, n)
		}
	}
}

// pruneLower removes from dir, recursively, everything that layers below
// layer put there: the effect of an opaque marker.
func (t *tree) pruneLower(dir *ext4.Inode, layer int) {
	for name, c := range dir.Entries {
		if t.layer[c] < layer {
			t.remove(dir, name)
		} else if c.Mode&ext4.ModeType == ext4.ModeDir {
			t.pruneLower(c, layer)
		}
	}
}

// apply adds one tar entry of the given layer. r is the entry's content.
func (t *tree) apply(hdr *tar.Header, r io.Reader, layer int) error {
	comps, base := splitPath(hdr.Name)

	if strings.HasPrefix(base, whiteoutPrefix) {
		dir, err := t.resolveDir(comps, false, layer)
		if err != nil || dir == nil {
			return err
		}
		switch {
		case base == opaqueMarker:
			t.pruneLower(dir, layer)
		case strings.HasPrefix(base, whiteoutMeta):
			// Other AUFS metadata: nothing to apply.
		default:
			name := base[len(whiteoutPrefix):]
			if c := dir.Entries[name]; c != nil && t.layer[c] < layer {
				t.remove(dir, name)
			}
		}
		return nil
	}
	if len(base) > 255 {
		return fmt.Errorf("name %q: longer than 255 bytes", base)
	}

	node := &ext4.Inode{
		Mode:  uint32(hdr.Mode) & 0o7777,
		Mtime: hdr.ModTime,
		Atime: orTime(hdr.AccessTime, hdr.ModTime),
		Ctime: orTime(hdr.ChangeTime, hdr.ModTime),
	}
	if hdr.Uid < 0 || hdr.Gid < 0 || int64(hdr.Uid) > 1<<32-1 || int64(hdr.Gid) > 1<<32-1 {
		return fmt.Errorf("owner %d:%d: out of range", hdr.Uid, hdr.Gid)
	}
	node.UID, node.GID = uint32(hdr.Uid), uint32(hdr.Gid)
	for k, v := range hdr.PAXRecords {
		if name, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
			if node.Xattrs == nil {
				node.Xattrs = map[string][]byte{}
			}
			node.Xattrs[name] = []byte(v)
		}
	}

	if err := ext4.CheckXattrs(node.Xattrs); err != nil {
		return err
	}
	if base == "" { // the root directory itself
		if hdr.Typeflag == tar.TypeDir {
			setMeta(t.root, node)
			t.layer[t.root] = layer
		}
		return nil
	}
	dir, err := t.resolveDir(comps, true, layer)
	if err != nil {
		return err
	}
	existing := dir.Entries[base]

	switch hdr.Typeflag {
	case tar.TypeDir:
		if existing != nil && existing.Mode&ext4.ModeType == ext4.ModeDir {
			setMeta(existing, node)
			t.layer[existing] = layer
			return nil
		}
		node.Mode |= ext4.ModeDir
		node.Entries = map[string]*ext4.Inode{}
	case tar.TypeReg, tar.TypeRegA, tar.TypeCont, tar.TypeGNUSparse:
		if existing != nil { // first, so that its blocks can be reused
			t.remove(dir, base)
			existing = nil
		}
		d, err := t.w.WriteData(r, hdr.Size)
		if err != nil {
			return fmt.Errorf("writing content: %w", err)
		}
		node.Mode |= ext4.ModeReg
		node.Data = d
	case tar.TypeSymlink:
		if hdr.Linkname == "" || len(hdr.Linkname) > ext4.BlockSize-1 {
			return fmt.Errorf("symlink target of %d bytes: must be 1 to %d", len(hdr.Linkname), ext4.BlockSize-1)
		}
		node.Mode |= ext4.ModeLink
		node.Symlink = hdr.Linkname
	case tar.TypeChar, tar.TypeBlock:
		node.Mode |= ext4.ModeChar
		if hdr.Typeflag == tar.TypeBlock {
			node.Mode = node.Mode&^ext4.ModeType | ext4.ModeBlock
		}
		if hdr.Devmajor < 0 || hdr.Devminor < 0 || hdr.Devmajor > 0xfff || hdr.Devminor > 0xfffff {
			return fmt.Errorf("device %d:%d: out of range", hdr.Devmajor, hdr.Devminor)
		}
		node.Devmajor, node.Devminor = uint32(hdr.Devmajor), uint32(hdr.Devminor)
	case tar.TypeFifo:
		node.Mode |= ext4.ModeFIFO
	case tar.TypeLink:
		lcomps, lbase := splitPath(hdr.Linkname)
		ldir, err := t.resolveDir(lcomps, false, layer)
		if err != nil {
			return fmt.Errorf("hard link target %s: %w", hdr.Linkname, err)
		}
		var target *ext4.Inode
		if ldir != nil && lbase != "" {
			target = ldir.Entries[lbase]
		}
		if target == nil {
			return fmt.Errorf("hard link target %s: not found", hdr.Linkname)
		}
		if target.Mode&ext4.ModeType == ext4.ModeDir {
			return fmt.Errorf("hard link target %s: is a directory", hdr.Linkname)
		}
		if target == existing {
			return nil
		}
		if existing != nil {
			t.remove(dir, base)
		}
		dir.Entries[base] = target
		t.links[target]++
		t.layer[target] = layer
		return nil
	default:
		return fmt.Errorf("tar entry type %q: not supported", hdr.Typeflag)
	}
	if existing != nil {
		t.remove(dir, base)
	}
	dir.Entries[base] = node
	t.layer[node] = layer
	if node.Mode&ext4.ModeType != ext4.ModeDir {
		t.links[node] = 1
	}
	return nil
}

func setMeta(dst, src *ext4.Inode) {
	dst.Mode = dst.Mode&ext4.ModeType | src.Mode&0o7777
	dst.UID, dst.GID = src.UID, src.GID
	dst.Atime, dst.Mtime, dst.Ctime = src.Atime, src.Mtime, src.Ctime
	dst.Xattrs = src.Xattrs
}

func orTime(t, fallback time.Time) time.Time {
	if t.IsZero() {
		return fallback
	}
	return t
}
