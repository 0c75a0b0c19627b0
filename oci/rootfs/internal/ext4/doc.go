// Package ext4 writes a read-only ext4 file system image from an in-memory
// tree whose file contents were streamed into the image beforehand.
//
// It owns the on-disk format only: superblock, group descriptors, bitmaps,
// inode tables, directories, extent trees and extended attributes. It knows
// nothing about tar, OCI layers or whiteouts (package rootfs does the
// flattening) and must import nothing outside the standard library.
//
// The layout is fixed and simple, chosen so that file data can be written
// while the tree is still being built:
//
//	block 0                 boot block + superblock
//	blocks 1..G             group descriptors (G reserved for the maximum size)
//	data                    file contents, in arrival order, all-zero blocks left as holes
//	metadata                directories, long symlinks, xattr blocks, extent tree blocks
//	tables                  block bitmaps, inode bitmaps, inode tables (flex_bg)
//
// Features: ext_attr, sparse_super2 without backups, filetype, extents,
// flex_bg, large_file, dir_nlink, extra_isize. No journal, no checksums, no
// htree (directories are linear), 4 KiB blocks, 256-byte inodes. The result
// passes `e2fsck -fn` and is meant to be mounted read-only.
package ext4
