// Package volume is the volume store: named volumes, global by name as
// docker's are, each a directory <store>/<NAME>/ holding volume.json (its
// name, kind, creation time, labels and driver options) and its data: the
// ext4 disk image disk.img (kind disk) or the host directory shared/ whose
// data/ is what guests mount (kind shared, for volumes with several
// writers).
//
// A volume appears whole or not at all: it is made in a directory aside
// and renamed into place, and removed by renaming it aside first, so a VM
// booting at the same time never sees half of one, and of two processes
// creating one name at once, one wins and both use its volume.
//
// In use: a QEMU that has a disk image open holds OFD locks on it (bytes
// 100 and up, one per permission; see QEMU's file-posix.c), so Open tells
// whether any QEMU, of any project or state dir, has a disk volume open,
// and whether as a writer. Which VM that is, and who uses a shared volume,
// is for the caller to find (reconcile reads the VMs' specs).
//
// It knows nothing of compose (the caller sets the labels) nor of VM
// backends; it uses package vm for the ext4 images.
package volume
