// Package rootfs turns an OCI image's layers into one read-only ext4 root
// file system image, without extracting anything onto the host: tar entries
// stream straight into an ext4 writer, and whiteouts, opaque directories,
// hard links and symlinked parents are resolved in an in-memory tree.
//
// It owns the flattening rules and the rootfs cache (<cacheDir>/<digest>.ext4).
// It must not import anything about VMs, compose or the CLI, and it does not
// pull: callers hand it a go-containerregistry v1.Image.
//
// # Flattening
//
// Layers apply bottom to top as the OCI image spec describes. Entry names
// are cleaned relative to the image root ("../../etc/x" and "/etc/x" both
// mean /etc/x). Parent directories resolve through symlinks inside the
// image, chroot style: ".." stops at the root and absolute targets start at
// the image root, so nothing can reach outside it (and nothing is written to
// the host anyway). Missing parents are created as 0755 root:root
// directories. A ".wh.NAME" whiteout removes NAME from lower layers, an
// ".wh..wh..opq" marker hides everything lower layers put in its directory;
// neither hides entries of its own layer. Hard links name their target by
// its path in the tree built so far.
//
// # Why our own ext4 writer
//
// The choice was between hcsshim's ext4/tar2ext4 (compactext4) and a small
// writer of our own (internal/ext4, about 800 lines, standard library only).
// Measured on the development machine:
//
//   - size: importing tar2ext4 pulls hcsshim's internal/log (logrus, otel,
//     protobuf): a static binary that reads a tar grows from 2.7 MB to 8.7 MB.
//     internal/ext4 adds only its own code.
//   - correctness: tar2ext4 images fail `e2fsck -fn` ("Padding at end of
//     inode bitmap is not set", exit 4); ours pass. compactext4 also writes
//     every byte of a sparse file and cannot delete a file once written, so
//     flattening would have to happen before writing.
//   - speed: see BenchmarkRootfs; the cost is dominated by reading and
//     hashing the layers, not by the writer.
//
// Our writer stores all-zero blocks as holes, reuses the blocks of files
// that upper layers delete, and writes metadata once at the end.
package rootfs
