// Package boot is vminit's early boot inside the guest: the pseudo
// filesystems, finding disks by serial, the overlay root (the image's
// read-only ext4 under the service's scratch disk), switching into it, and
// powering off. Kernel modules are loaded with vm/initramfs/modload, which
// reads the manifest the initramfs builder wrote.
//
// It runs as PID 1 on Linux only. It must not import host packages (oci/,
// project/, vm/, reconcile/), except vm/initramfs/modload, which is made for
// the guest; it knows the disk serials by convention.
package boot
