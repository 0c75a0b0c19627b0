// Package vm defines the Driver interface that every VM backend implements,
// and owns the guest kernel and initramfs. Backends live in sub-packages
// (vm/qemu, vm/cloudhv, vm/vz). It knows nothing about compose.
package vm
