package ext4

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
)

const (
	xattrMagic       = 0xEA020000
	inodeXattrSpace  = inodeSize - 128 - extraIsize // magic, entries, values
	blockXattrHeader = 32
)

type xattr struct {
	index uint8
	name  string
	value []byte
}

func (x xattr) entryLen() int { return 16 + (len(x.name)+3)&^3 }
func (x xattr) valueLen() int { return (len(x.value) + 3) &^ 3 }

// Name prefixes and their on-disk indexes, as the kernel's ext4 xattr
// handlers know them.
var xattrPrefixes = []struct {
	prefix string
	index  uint8
}{
	{"user.", 1},
	{"trusted.", 4},
	{"security.", 6},
	{"system.", 7},
}

func splitXattr(name string, value []byte) (xattr, error) {
	switch name {
	case "system.posix_acl_access", "system.posix_acl_default":
		v, err := aclToDisk(value)
		if err != nil {
			return xattr{}, fmt.Errorf("xattr %s: %w", name, err)
		}
		idx := uint8(2)
		if name == "system.posix_acl_default" {
			idx = 3
		}
		return xattr{index: idx, value: v}, nil
	}
	for _, p := range xattrPrefixes {
		if rest, ok := strings.CutPrefix(name, p.prefix); ok && rest != "" {
			return xattr{index: p.index, name: rest, value: value}, nil
		}
	}
	return xattr{}, fmt.Errorf("xattr %q: %w", name, errUnknownNamespace)
}

var errUnknownNamespace = errors.New("name space unknown to ext4")

// CheckXattrs reports whether attrs can be stored: Finish would fail on the
// same attributes. Names outside the user, trusted, security and system
// name spaces are accepted and left out, as Linux's ext4 cannot hold them.
func CheckXattrs(attrs map[string][]byte) error {
	_, _, err := layoutXattrs(attrs)
	return err
}

// aclToDisk converts a POSIX ACL from the xattr interface format (version 2,
// 8-byte entries) to the ext4 on-disk format (version 1, 4-byte entries for
// the owner, group, mask and other entries).
func aclToDisk(v []byte) ([]byte, error) {
	if len(v) < 4 || (len(v)-4)%8 != 0 || le.Uint32(v) != 2 {
		return nil, fmt.Errorf("not a version 2 POSIX ACL")
	}
	out := le.AppendUint32(nil, 1)
	for e := v[4:]; len(e) > 0; e = e[8:] {
		tag := le.Uint16(e)
		out = append(out, e[:4]...)
		switch tag {
		case 0x01, 0x04, 0x10, 0x20: // user obj, group obj, mask, other
		case 0x02, 0x08: // named user, named group
			out = append(out, e[4:8]...)
		default:
			return nil, fmt.Errorf("unknown ACL tag %#x", tag)
		}
	}
	return out, nil
}

func xattrHash(x xattr) uint32 {
	var h uint32
	for i := 0; i < len(x.name); i++ {
		h = h<<5 ^ h>>27 ^ uint32(int32(int8(x.name[i]))) // e2fsprogs hashes signed chars
	}
	for i := 0; i < len(x.value); i += 4 {
		var w [4]byte
		copy(w[:], x.value[i:])
		h = h<<16 ^ h>>16 ^ le.Uint32(w[:])
	}
	return h
}

// layoutXattrs places the attributes in the inode's spare space first and in
// one attribute block after that. It returns the bytes for offset 160 of the
// inode (nil when there are none there) and the block (nil when not needed).
func layoutXattrs(attrs map[string][]byte) (inline, block []byte, err error) {
	if len(attrs) == 0 {
		return nil, nil, nil
	}
	var all []xattr
	for name, v := range attrs {
		x, err := splitXattr(name, v)
		if errors.Is(err, errUnknownNamespace) {
			continue // the kernel could not show it either
		}
		if err != nil {
			return nil, nil, err
		}
		if len(x.name) > 255 {
			return nil, nil, fmt.Errorf("xattr %q: name too long", name)
		}
		all = append(all, x)
	}
	// The kernel looks entries up in this order in attribute blocks.
	slices.SortFunc(all, func(a, b xattr) int {
		return cmp.Or(cmp.Compare(a.index, b.index), cmp.Compare(len(a.name), len(b.name)), strings.Compare(a.name, b.name))
	})
	var in, blk []xattr
	inLeft := inodeXattrSpace - 4 - 4 // magic, terminator
	blkLeft := BlockSize - blockXattrHeader - 4
	for _, x := range all {
		n := x.entryLen() + x.valueLen()
		switch {
		case n <= inLeft:
			in = append(in, x)
			inLeft -= n
		case n <= blkLeft:
			blk = append(blk, x)
			blkLeft -= n
		default:
			return nil, nil, fmt.Errorf("xattrs of %d bytes: more than fit in an inode and one block", n)
		}
	}
	if len(in) > 0 {
		inline = make([]byte, inodeXattrSpace)
		le.PutUint32(inline, xattrMagic)
		putXattrs(inline[4:], in, 0)
	}
	if len(blk) > 0 {
		block = make([]byte, BlockSize)
		le.PutUint32(block[0:], xattrMagic)
		le.PutUint32(block[4:], 1) // refcount
		le.PutUint32(block[8:], 1) // blocks
		hashes := putXattrs(block[blockXattrHeader:], blk, blockXattrHeader)
		var h uint32
		for _, eh := range hashes {
			h = h<<16 ^ h>>16 ^ eh
		}
		le.PutUint32(block[12:], h)
	}
	return inline, block, nil
}

// putXattrs writes entries from the start of b and values from its end.
// Value offsets are relative to b's start plus base.
func putXattrs(b []byte, xs []xattr, base int) []uint32 {
	off, end := 0, len(b)
	var hashes []uint32
	for _, x := range xs {
		end -= x.valueLen()
		copy(b[end:], x.value)
		e := b[off:]
		e[0] = uint8(len(x.name))
		e[1] = x.index
		le.PutUint16(e[2:], uint16(end+base))
		le.PutUint32(e[8:], uint32(len(x.value)))
		h := xattrHash(x)
		le.PutUint32(e[12:], h)
		copy(e[16:], x.name)
		hashes = append(hashes, h)
		off += x.entryLen()
	}
	return hashes
}
