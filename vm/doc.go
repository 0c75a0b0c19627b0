// Package vm defines what a VM is to vmcompose, independent of the
// hypervisor: the Spec of a VM (sizes, kernel, disks, NICs, console), the
// Driver interface every backend implements, with its optional abilities
// (Waiter, Lister), the sentinel errors, and the ext4 disks of a VM's
// writable layer and of volumes.
//
// Backends live in sub-packages: vm/qemu (Linux), later vm/cloudhv and
// vm/vz (macOS). The guest kernel and initramfs are vm/kernel and
// vm/initramfs; vm/vmtest is the conformance suite every backend runs.
//
// Package vm builds on every host OS. It knows nothing about compose: it
// must not import project/, planner/, reconcile/, oci/ or compose-go (a test
// checks), and callers map a service to a Spec.
package vm
