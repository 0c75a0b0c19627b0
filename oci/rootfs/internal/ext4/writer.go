package ext4

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"time"
)

// BlockSize is the file system block size in bytes.
const BlockSize = 4096

const (
	blocksPerGroup    = 8 * BlockSize
	inodeSize         = 256
	inodesPerBlock    = BlockSize / inodeSize
	extraIsize        = 32
	maxInodesPerGroup = 8 * BlockSize
	descSize          = 32
	rootIno           = 2
	firstIno          = 11
	maxExtentLen      = 32768
	extentsPerBlock   = (BlockSize - 12) / 12
	maxSymlinkLen     = BlockSize - 1
	fastSymlinkLen    = 60 // targets shorter than this live in the inode
	maxNameLen        = 255
)

// File type bits of Inode.Mode, as in stat(2).
const (
	ModeType   = 0o170000
	ModeSocket = 0o140000
	ModeLink   = 0o120000
	ModeReg    = 0o100000
	ModeBlock  = 0o060000
	ModeDir    = 0o040000
	ModeChar   = 0o020000
	ModeFIFO   = 0o010000
)

// ErrTooLarge is returned when the image would exceed the maximum size given
// to NewWriter or the limits of the format.
var ErrTooLarge = errors.New("file system image too large")

// Inode is one file in the tree handed to Finish. The same *Inode may appear
// under several names (hard links); directories may appear only once.
type Inode struct {
	Mode   uint32 // file type and permission bits (including setuid, setgid, sticky)
	UID    uint32
	GID    uint32
	Atime  time.Time
	Mtime  time.Time
	Ctime  time.Time
	Xattrs map[string][]byte // full names such as "security.capability"

	Data     *Data             // regular files: content written by WriteData
	Symlink  string            // symbolic links: the target
	Devmajor uint32            // character and block devices
	Devminor uint32            // character and block devices
	Entries  map[string]*Inode // directories: children by name
}

// Data is the on-disk placement of a regular file's content.
type Data struct {
	size    int64
	extents []extent
}

// Size is the logical size of the content in bytes.
func (d *Data) Size() int64 { return d.size }

type extent struct {
	logical uint32 // first file block
	start   uint32 // first disk block
	length  uint32
}

type run struct{ start, length uint32 }

// Writer places file contents into an image as they arrive and writes the
// metadata when the tree is complete. It is not safe for concurrent use.
type Writer struct {
	f         io.WriterAt
	maxBlocks uint32
	gdtBlocks uint32 // reserved right after the superblock
	next      uint32 // first never-allocated block
	free      []run  // freed blocks below next, reused first
	buf       []byte
	zero      []byte
	UUID      [16]byte // written into the superblock; set before Finish
	finished  bool
}

// NewWriter returns a Writer that writes an image of at most maxSize bytes
// to f, which should be empty.
func NewWriter(f io.WriterAt, maxSize int64) (*Writer, error) {
	if maxSize < 1<<20 {
		maxSize = 1 << 20
	}
	mb := (maxSize + BlockSize - 1) / BlockSize
	if mb > math.MaxUint32 {
		mb = math.MaxUint32
	}
	groups := (uint64(mb) + blocksPerGroup - 1) / blocksPerGroup
	gdt := uint32((groups*descSize + BlockSize - 1) / BlockSize)
	return &Writer{
		f:         f,
		maxBlocks: uint32(mb),
		gdtBlocks: gdt,
		next:      1 + gdt,
		buf:       make([]byte, 256*BlockSize),
		zero:      make([]byte, BlockSize),
	}, nil
}

// alloc returns up to n contiguous free blocks.
func (w *Writer) alloc(n uint32) (start, got uint32, err error) {
	if len(w.free) > 0 {
		r := &w.free[0]
		start, got = r.start, min(n, r.length)
		r.start += got
		r.length -= got
		if r.length == 0 {
			w.free = w.free[1:]
		}
		return start, got, nil
	}
	if uint64(w.next)+uint64(n) > uint64(w.maxBlocks) {
		return 0, 0, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, uint64(w.maxBlocks)*BlockSize)
	}
	start = w.next
	w.next += n
	return start, n, nil
}

// Free gives the blocks of d back for later files. d must not be used
// again. Finish zeroes the blocks no later file took, so that content an
// upper layer deleted cannot be read from the raw image.
func (w *Writer) Free(d *Data) {
	for _, e := range d.extents {
		w.free = append(w.free, run{e.start, e.length})
	}
	d.extents = nil
}

func (d *Data) add(logical, start, n uint32) {
	if k := len(d.extents); k > 0 {
		last := &d.extents[k-1]
		if last.logical+last.length == logical && last.start+last.length == start && last.length+n <= maxExtentLen {
			last.length += n
			return
		}
	}
	d.extents = append(d.extents, extent{logical, start, n})
}

// writeBlocks writes b (a multiple of BlockSize) to newly allocated blocks
// starting at file block logical and records them in d.
func (w *Writer) writeBlocks(d *Data, logical uint32, b []byte) error {
	for len(b) > 0 {
		want := uint32(len(b) / BlockSize)
		start, got, err := w.alloc(min(want, maxExtentLen))
		if err != nil {
			return err
		}
		n := int(got) * BlockSize
		if _, err := w.f.WriteAt(b[:n], int64(start)*BlockSize); err != nil {
			return fmt.Errorf("writing blocks %d-%d: %w", start, start+got-1, err)
		}
		d.add(logical, start, got)
		logical += got
		b = b[n:]
	}
	return nil
}

// WriteData copies exactly size bytes from r into the image and returns
// where they went. Blocks that are all zero become holes.
func (w *Writer) WriteData(r io.Reader, size int64) (*Data, error) {
	if size < 0 || size > int64(math.MaxUint32)*BlockSize {
		return nil, fmt.Errorf("%w: file of %d bytes", ErrTooLarge, size)
	}
	d := &Data{size: size}
	var logical uint32
	for remaining := size; remaining > 0; {
		n := int(min(remaining, int64(len(w.buf))))
		if _, err := io.ReadFull(r, w.buf[:n]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		remaining -= int64(n)
		nb := (n + BlockSize - 1) / BlockSize
		clear(w.buf[n : nb*BlockSize])
		chunk := w.buf[:nb*BlockSize]
		for i := 0; i < nb; {
			if bytes.Equal(chunk[i*BlockSize:(i+1)*BlockSize], w.zero) {
				i++
				continue
			}
			j := i + 1
			for j < nb && !bytes.Equal(chunk[j*BlockSize:(j+1)*BlockSize], w.zero) {
				j++
			}
			if err := w.writeBlocks(d, logical+uint32(i), chunk[i*BlockSize:j*BlockSize]); err != nil {
				return nil, err
			}
			i = j
		}
		logical += uint32(nb)
	}
	return d, nil
}

// inodeInfo is what Finish learns about one inode before writing it.
type inodeInfo struct {
	node   *Inode
	ino    uint32
	links  uint32
	parent uint32 // directories
}

// Finish writes directories, inodes, bitmaps, group descriptors and the
// superblock for the tree under root, and returns the image size in bytes.
// A lost+found directory is added to root when missing.
func (w *Writer) Finish(root *Inode) (int64, error) {
	if w.finished {
		return 0, errors.New("ext4 writer already finished")
	}
	w.finished = true
	if root == nil || root.Mode&ModeType != ModeDir {
		return 0, errors.New("root is not a directory")
	}
	if root.Entries == nil {
		root.Entries = map[string]*Inode{}
	}
	if _, ok := root.Entries["lost+found"]; !ok {
		root.Entries["lost+found"] = &Inode{Mode: ModeDir | 0o700, Entries: map[string]*Inode{}}
	}

	// Number the inodes depth first in name order, so that equal trees give
	// equal images.
	infos := []*inodeInfo{{node: root, ino: rootIno, parent: rootIno, links: 2}}
	byNode := map[*Inode]*inodeInfo{root: infos[0]}
	nextIno := uint32(firstIno)
	var walk func(dir *inodeInfo, path string) error
	walk = func(dir *inodeInfo, path string) error {
		names := sortedNames(dir.node.Entries)
		for _, name := range names {
			child := dir.node.Entries[name]
			if len(name) == 0 || len(name) > maxNameLen || name == "." || name == ".." || bytes.ContainsAny([]byte(name), "/\x00") {
				return fmt.Errorf("name %q in %s: not a valid file name", name, path)
			}
			if child == nil {
				return fmt.Errorf("%s/%s: nil inode", path, name)
			}
			if info, ok := byNode[child]; ok {
				if child.Mode&ModeType == ModeDir {
					return fmt.Errorf("%s/%s: directory linked twice", path, name)
				}
				info.links++
				continue
			}
			if nextIno == math.MaxUint32 {
				return fmt.Errorf("%w: too many inodes", ErrTooLarge)
			}
			info := &inodeInfo{node: child, ino: nextIno, links: 1}
			nextIno++
			infos = append(infos, info)
			byNode[child] = info
			if child.Mode&ModeType == ModeDir {
				info.parent = dir.ino
				info.links = 2
				dir.links++
				if err := walk(info, path+"/"+name); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(infos[0], ""); err != nil {
		return 0, err
	}
	ninodes := nextIno - 1

	// Inode table contents, then the metadata blocks they point to.
	table := make([]byte, int(ninodes)*inodeSize)
	dirsPerIno := make([]bool, ninodes+1)
	for _, info := range infos {
		b := table[(info.ino-1)*inodeSize : info.ino*inodeSize]
		if err := w.encodeInode(b, info, byNode); err != nil {
			return 0, err
		}
		dirsPerIno[info.ino] = info.node.Mode&ModeType == ModeDir
	}

	// Group layout: bitmaps and inode tables go after everything else.
	groups := uint32(1)
	var ipg, itb, total uint32
	for {
		ipg = (ninodes + groups - 1) / groups
		ipg = (ipg + inodesPerBlock - 1) / inodesPerBlock * inodesPerBlock
		if ipg > maxInodesPerGroup {
			groups++
			continue
		}
		itb = ipg / inodesPerBlock
		t := uint64(w.next) + uint64(groups)*uint64(2+itb)
		if t > uint64(w.maxBlocks) {
			return 0, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, uint64(w.maxBlocks)*BlockSize)
		}
		total = uint32(t)
		if need := (total + blocksPerGroup - 1) / blocksPerGroup; need > groups {
			groups = need
			continue
		}
		break
	}
	if floor := (groups-1)*blocksPerGroup + 1024; groups > 1 && total < floor {
		total = floor // the last group needs blocks of its own
	}
	if gdt := (groups*descSize + BlockSize - 1) / BlockSize; gdt > w.gdtBlocks {
		return 0, fmt.Errorf("%w: %d block groups need more than the %d descriptor blocks reserved", ErrTooLarge, groups, w.gdtBlocks)
	}
	tables := w.next
	bbStart, ibStart, itStart := tables, tables+groups, tables+2*groups
	used := tables + groups*(2+itb) // first block after the tables

	// Block bitmap.
	bitmap := make([]byte, int(groups)*BlockSize)
	set := func(a, b uint32) { // [a, b)
		for i := a; i < b; i++ {
			bitmap[i/8] |= 1 << (i % 8)
		}
	}
	gdtUsed := (groups*descSize + BlockSize - 1) / BlockSize
	set(0, 1+gdtUsed)
	set(1+w.gdtBlocks, used)
	for _, r := range w.free {
		for i := r.start; i < r.start+r.length; i++ {
			bitmap[i/8] &^= 1 << (i % 8)
		}
	}
	set(total, groups*blocksPerGroup) // padding past the end
	if err := w.zeroFree(); err != nil {
		return 0, err
	}

	gd := make([]byte, int(gdtUsed)*BlockSize)
	var freeBlocks, freeInodes uint64
	ibm := make([]byte, BlockSize)
	for g := uint32(0); g < groups; g++ {
		nfree := uint32(0)
		for i := g * blocksPerGroup; i < (g+1)*blocksPerGroup; i++ {
			if bitmap[i/8]&(1<<(i%8)) == 0 {
				nfree++
			}
		}
		clear(ibm)
		usedInodes, dirs := uint32(0), uint32(0)
		for i := uint32(0); i < ipg; i++ {
			ino := g*ipg + i + 1
			if ino <= ninodes {
				ibm[i/8] |= 1 << (i % 8)
				usedInodes++
				if dirsPerIno[ino] {
					dirs++
				}
			}
		}
		for i := ipg; i < 8*BlockSize; i++ {
			ibm[i/8] |= 1 << (i % 8)
		}
		if _, err := w.f.WriteAt(ibm, int64(ibStart+g)*BlockSize); err != nil {
			return 0, fmt.Errorf("writing inode bitmap: %w", err)
		}
		if _, err := w.f.WriteAt(bitmap[g*BlockSize:(g+1)*BlockSize], int64(bbStart+g)*BlockSize); err != nil {
			return 0, fmt.Errorf("writing block bitmap: %w", err)
		}
		it := make([]byte, int(itb)*BlockSize)
		if lo := g * ipg; lo < ninodes {
			copy(it, table[lo*inodeSize:min(ninodes, lo+ipg)*inodeSize])
		}
		if _, err := w.f.WriteAt(it, int64(itStart+g*itb)*BlockSize); err != nil {
			return 0, fmt.Errorf("writing inode table: %w", err)
		}
		d := gd[g*descSize : (g+1)*descSize]
		le.PutUint32(d[0:], bbStart+g)
		le.PutUint32(d[4:], ibStart+g)
		le.PutUint32(d[8:], itStart+g*itb)
		le.PutUint16(d[12:], uint16(nfree))
		le.PutUint16(d[14:], uint16(ipg-usedInodes))
		le.PutUint16(d[16:], uint16(dirs))
		le.PutUint16(d[18:], 4) // EXT4_BG_INODE_ZEROED
		freeBlocks += uint64(nfree)
		freeInodes += uint64(ipg - usedInodes)
	}
	if _, err := w.f.WriteAt(gd, BlockSize); err != nil {
		return 0, fmt.Errorf("writing group descriptors: %w", err)
	}
	if total > used {
		// Make the image file as long as the file system.
		if _, err := w.f.WriteAt(w.zero, int64(total-1)*BlockSize); err != nil {
			return 0, fmt.Errorf("writing last block: %w", err)
		}
	}

	sb := make([]byte, 2*1024) // boot block + superblock
	s := sb[1024:]
	le.PutUint32(s[0x0:], groups*ipg)
	le.PutUint32(s[0x4:], total)
	le.PutUint32(s[0xC:], uint32(freeBlocks))
	le.PutUint32(s[0x10:], uint32(freeInodes))
	le.PutUint32(s[0x14:], 0) // first data block
	le.PutUint32(s[0x18:], 2) // log block size: 1024 << 2
	le.PutUint32(s[0x1C:], 2) // log cluster size
	le.PutUint32(s[0x20:], blocksPerGroup)
	le.PutUint32(s[0x24:], blocksPerGroup)
	le.PutUint32(s[0x28:], ipg)
	le.PutUint16(s[0x36:], 0xFFFF) // max mount count: -1
	le.PutUint16(s[0x38:], 0xEF53)
	le.PutUint16(s[0x3A:], 1) // state: clean
	le.PutUint16(s[0x3C:], 1) // errors: continue
	le.PutUint32(s[0x4C:], 1) // dynamic revision
	le.PutUint32(s[0x54:], firstIno)
	le.PutUint16(s[0x58:], inodeSize)
	le.PutUint32(s[0x5C:], 0x8|0x200)         // ext_attr, sparse_super2
	le.PutUint32(s[0x60:], 0x2|0x40|0x200)    // filetype, extents, flex_bg
	le.PutUint32(s[0x64:], 0x1|0x2|0x20|0x40) // sparse_super, large_file, dir_nlink, extra_isize
	copy(s[0x68:0x78], w.UUID[:])
	le.PutUint16(s[0x15C:], extraIsize)
	le.PutUint16(s[0x15E:], extraIsize)
	le.PutUint32(s[0x160:], 0x2) // unsigned directory hash
	s[0x174] = 4                 // log groups per flex
	// s_backup_bgs stay 0: no backup superblocks.
	if _, err := w.f.WriteAt(s, 1024); err != nil {
		return 0, fmt.Errorf("writing superblock: %w", err)
	}
	return int64(total) * BlockSize, nil
}

var le = binary.LittleEndian

// zeroFree overwrites the freed blocks that are still free.
func (w *Writer) zeroFree() error {
	zeros := make([]byte, 256*BlockSize)
	for _, r := range w.free {
		for off := uint32(0); off < r.length; {
			n := min(r.length-off, uint32(len(zeros)/BlockSize))
			if _, err := w.f.WriteAt(zeros[:n*BlockSize], int64(r.start+off)*BlockSize); err != nil {
				return fmt.Errorf("zeroing freed blocks: %w", err)
			}
			off += n
		}
	}
	return nil
}

func sortedNames(m map[string]*Inode) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func fileType(mode uint32) uint8 {
	switch mode & ModeType {
	case ModeReg:
		return 1
	case ModeDir:
		return 2
	case ModeChar:
		return 3
	case ModeBlock:
		return 4
	case ModeFIFO:
		return 5
	case ModeSocket:
		return 6
	case ModeLink:
		return 7
	}
	return 0
}

// dirBlocks lays out a linear directory.
func dirBlocks(self, parent uint32, node *Inode, byNode map[*Inode]*inodeInfo) []byte {
	var out []byte
	blk := make([]byte, BlockSize)
	off, last := 0, -1
	add := func(ino uint32, name string, ft uint8) {
		size := 8 + (len(name)+3)&^3
		if off+size > BlockSize {
			le.PutUint16(blk[last+4:], uint16(BlockSize-last))
			out = append(out, blk...)
			blk = make([]byte, BlockSize)
			off = 0
		}
		le.PutUint32(blk[off:], ino)
		le.PutUint16(blk[off+4:], uint16(size))
		blk[off+6] = uint8(len(name))
		blk[off+7] = ft
		copy(blk[off+8:], name)
		last = off
		off += size
	}
	add(self, ".", 2)
	add(parent, "..", 2)
	for _, name := range sortedNames(node.Entries) {
		c := node.Entries[name]
		add(byNode[c].ino, name, fileType(c.Mode))
	}
	le.PutUint16(blk[last+4:], uint16(BlockSize-last))
	return append(out, blk...)
}

func (w *Writer) encodeInode(b []byte, info *inodeInfo, byNode map[*Inode]*inodeInfo) error {
	n := info.node
	var size uint64
	var blocks uint64
	var iblock [60]byte
	var flags uint32
	useExtents := func(d *Data) error {
		tree, err := w.extentTree(d.extents)
		if err != nil {
			return err
		}
		copy(iblock[:], tree.root[:])
		blocks += uint64(tree.blocks)
		for _, e := range d.extents {
			blocks += uint64(e.length)
		}
		flags |= 0x80000 // EXT4_EXTENTS_FL
		return nil
	}
	switch n.Mode & ModeType {
	case ModeReg:
		d := n.Data
		if d == nil {
			d = &Data{}
		}
		size = uint64(d.size)
		if err := useExtents(d); err != nil {
			return err
		}
	case ModeDir:
		d := &Data{}
		content := dirBlocks(info.ino, info.parent, n, byNode)
		if err := w.writeBlocks(d, 0, content); err != nil {
			return err
		}
		size = uint64(len(content))
		if err := useExtents(d); err != nil {
			return err
		}
	case ModeLink:
		t := n.Symlink
		switch {
		case len(t) == 0 || len(t) > maxSymlinkLen:
			return fmt.Errorf("symlink target of %d bytes: must be 1 to %d", len(t), maxSymlinkLen)
		case len(t) < fastSymlinkLen:
			copy(iblock[:], t)
		default:
			d := &Data{}
			blk := make([]byte, BlockSize)
			copy(blk, t)
			if err := w.writeBlocks(d, 0, blk); err != nil {
				return err
			}
			if err := useExtents(d); err != nil {
				return err
			}
		}
		size = uint64(len(t))
	case ModeChar, ModeBlock:
		ma, mi := n.Devmajor, n.Devminor
		if ma < 256 && mi < 256 {
			le.PutUint32(iblock[0:], ma<<8|mi)
		} else {
			le.PutUint32(iblock[4:], mi&0xff|(ma&0xfff)<<8|(mi&^0xff)<<12)
		}
	case ModeFIFO, ModeSocket:
	default:
		return fmt.Errorf("inode %d: unknown file type %#o", info.ino, n.Mode&ModeType)
	}

	inline, block, err := layoutXattrs(n.Xattrs)
	if err != nil {
		return err
	}
	var acl uint32
	if block != nil {
		d := &Data{}
		if err := w.writeBlocks(d, 0, block); err != nil {
			return err
		}
		acl = d.extents[0].start
		blocks++
	}

	if info.links > 0xFFFF {
		if n.Mode&ModeType == ModeDir {
			info.links = 1 // dir_nlink: too many to count
		} else {
			return fmt.Errorf("inode %d: %d hard links, at most 65535", info.ino, info.links)
		}
	}
	le.PutUint16(b[0:], uint16(n.Mode))
	le.PutUint16(b[2:], uint16(n.UID))
	le.PutUint32(b[4:], uint32(size))
	at, atx := encodeTime(n.Atime)
	ct, ctx := encodeTime(n.Ctime)
	mt, mtx := encodeTime(n.Mtime)
	le.PutUint32(b[8:], at)
	le.PutUint32(b[12:], ct)
	le.PutUint32(b[16:], mt)
	le.PutUint16(b[24:], uint16(n.GID))
	le.PutUint16(b[26:], uint16(info.links))
	le.PutUint32(b[28:], uint32(blocks*(BlockSize/512)))
	le.PutUint32(b[32:], flags)
	copy(b[40:100], iblock[:])
	le.PutUint32(b[104:], acl)
	le.PutUint32(b[108:], uint32(size>>32))
	le.PutUint16(b[116:], uint16(blocks*(BlockSize/512)>>32))
	le.PutUint16(b[120:], uint16(n.UID>>16))
	le.PutUint16(b[122:], uint16(n.GID>>16))
	le.PutUint16(b[128:], extraIsize)
	le.PutUint32(b[132:], ctx)
	le.PutUint32(b[136:], mtx)
	le.PutUint32(b[140:], atx)
	le.PutUint32(b[144:], mt) // crtime: the image has no better answer
	le.PutUint32(b[148:], mtx)
	if inline != nil {
		copy(b[128+extraIsize:], inline)
	}
	if blocks*(BlockSize/512) >= 1<<32 {
		return fmt.Errorf("%w: inode %d has %d blocks", ErrTooLarge, info.ino, blocks)
	}
	return nil
}

// encodeTime returns the seconds and the extra field (nanoseconds and the
// two epoch bits) of t, clamped to what ext4 can store.
func encodeTime(t time.Time) (uint32, uint32) {
	if t.IsZero() {
		return 0, 0
	}
	sec := t.Unix()
	sec = max(sec, math.MinInt32)
	sec = min(sec, math.MaxInt32+3<<32)
	epoch := uint32((sec-int64(int32(sec)))>>32) & 3
	return uint32(int32(sec)), uint32(t.Nanosecond())<<2 | epoch
}

type extentTree struct {
	root   [60]byte
	blocks uint32 // tree blocks outside the inode
}

// extentTree writes the index and leaf blocks needed for exts and returns
// the part that goes into the inode.
func (w *Writer) extentTree(exts []extent) (extentTree, error) {
	var t extentTree
	type entry struct {
		logical uint32
		raw     [12]byte
	}
	level := make([]entry, len(exts))
	for i, e := range exts {
		level[i].logical = e.logical
		r := level[i].raw[:]
		le.PutUint32(r[0:], e.logical)
		le.PutUint16(r[4:], uint16(e.length))
		le.PutUint32(r[8:], e.start)
	}
	depth := uint16(0)
	for len(level) > 4 {
		if depth == 4 {
			return t, fmt.Errorf("%w: file with %d extents", ErrTooLarge, len(exts))
		}
		var up []entry
		for chunk := range slices.Chunk(level, extentsPerBlock) {
			blk := make([]byte, BlockSize)
			putExtentHeader(blk, len(chunk), extentsPerBlock, depth)
			for i, e := range chunk {
				copy(blk[12+12*i:], e.raw[:])
			}
			start, _, err := w.alloc(1)
			if err != nil {
				return t, err
			}
			if _, err := w.f.WriteAt(blk, int64(start)*BlockSize); err != nil {
				return t, fmt.Errorf("writing extent block: %w", err)
			}
			t.blocks++
			var ix entry
			ix.logical = chunk[0].logical
			le.PutUint32(ix.raw[0:], ix.logical)
			le.PutUint32(ix.raw[4:], start)
			up = append(up, ix)
		}
		level = up
		depth++
	}
	putExtentHeader(t.root[:], len(level), 4, depth)
	for i, e := range level {
		copy(t.root[12+12*i:], e.raw[:])
	}
	return t, nil
}

func putExtentHeader(b []byte, entries, max int, depth uint16) {
	le.PutUint16(b[0:], 0xF30A)
	le.PutUint16(b[2:], uint16(entries))
	le.PutUint16(b[4:], uint16(max))
	le.PutUint16(b[6:], depth)
}
