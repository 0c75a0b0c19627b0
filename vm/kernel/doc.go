// Package kernel finds, fetches and describes the Linux kernel that guests
// boot.
//
// A kernel is a directory with a kernel.json manifest beside the bootable
// image, the kernel's build config and its modules tree:
//
//	<store>/kernel/
//	  .lock                          held while fetching
//	  6.1.0-56-cloud-amd64/
//	    kernel.json                  written last: a directory without it is incomplete
//	    vmlinux                      ELF with a PVH entry note (amd64)
//	    vmlinuz                      the distribution's compressed bzImage
//	    config                       the kernel's .config
//	    lib/modules/<version>/       modules, modules.dep, modules.builtin
//
// Any source that lays a kernel out this way fits: Fetch does it from
// Debian's cloud kernel package today; a kernel shipped as an OCI artifact
// (the way macOS/arm64 will get one) only needs to be unpacked into the same
// shape. Find honours VMCOMPOSE_KERNEL (and VMCOMPOSE_KERNEL_MODULES) before
// looking in the store.
//
// The package owns the kernel's files and their dependency order between
// modules. It must not import other vmcompose packages but internal/flock:
// it knows nothing of VMs, compose, the OCI store's image layout or the CLI.
package kernel
