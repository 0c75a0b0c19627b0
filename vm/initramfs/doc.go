// Package initramfs builds the initramfs every guest boots: the vmcompose
// init as /init, the kernel modules the guest needs that the kernel lacks
// built in, and a manifest that lists them in load order (see package
// modload, which the init uses to read and load them).
//
// Images are cached by content in a directory the caller chooses (the store
// uses <store>/initramfs/): the same init binary, kernel and module set give
// the same file, built once.
//
// It imports vm/kernel and internal/flock and nothing else of vmcompose; it
// knows nothing of compose, the OCI store or VM backends.
package initramfs
