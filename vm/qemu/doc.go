// Package qemu is the QEMU backend of vm.Driver for Linux hosts: one
// qemu-system process per VM, with KVM when /dev/kvm works and TCG
// otherwise, on the microvm machine booting a PVH vmlinux.
//
// # Machine
//
// microvm with ACPI (for the power button), virtio-mmio devices in modern
// mode, no PCI, no firmware; the console on the ISA serial port into a
// file; QMP and the agent's virtio-serial port on unix sockets; disks as
// virtio-blk found by serial; NICs as -netdev stream to a unix socket.
// Under TCG the kernel is told the host's TSC frequency (tsc_early_khz:
// from /proc/cpuinfo inside a VM, timed on bare metal), without which
// about one boot in four hangs calibrating it. qemu runs under its seccomp
// sandbox when built with one.
//
// # Shares
//
// Each vm.Spec share is served by its own QEMU virtiofsd (the C daemon of
// QEMU 7.2, which needs root) over a vhost-user socket in the VM
// directory, and shows in the guest as a vhost-user-fs device with the
// share's tag. Only VMs with shares get their memory as a shared memfd,
// which the daemons need. The daemons run in a mount namespace of their
// own where each share's source is mounted on shares/<i> in the VM
// directory: read-only there for a read-only share, so the guest cannot
// write it even if it remounts it; a single file is mounted on an empty
// file in a read-only directory, so the guest sees that file and nothing
// else. The host's namespace never has these mounts, so deleting the VM
// directory never reaches a share's files. A share with Locks (a shared
// volume) gets the daemon's flock and posix_lock: the guests' flock and
// fcntl locks are the host file's, seen by every VM sharing it, but only
// the non-blocking ones work (the daemon answers a blocking one with
// EOPNOTSUPP).
//
// A daemon serves one connection and exits when qemu closes it, that is
// when qemu ends; the driver waits for that after qemu has ended (killing
// what is left after 2 s), so Stop, Kill and Wait return with the daemons
// gone. A failed Start ends the daemons it started; with
// DieWithController they die with the controller, like qemu; an adopted
// VM keeps its own. Daemons are found by their source= argument, which
// holds the VM directory, so New, Start and Remove also end those a Start
// that died before qemu ran left behind (they would wait for a connection
// for ever).
//
// # Templates
//
// With WithTemplates, a VM boots from a template of its machine rather
// than from the kernel: see template_linux.go. The templates directory
// holds, per machine key, <key>.snap (the saved device state), <key>.ram
// (the guest memory the copies map privately), <key>.initrd (the
// initramfs behind the ACPI table that describes every virtio-mmio
// transport), <key>.json (what it was built from) and, after a failed
// build, <key>.failed.
//
// "KVM works" is decided by a trial boot of the kernel (cached per host
// boot in the user cache directory): an openable /dev/kvm is not enough on
// nested hosts whose vCPUs hang or fail. VMCOMPOSE_ACCEL=tcg|kvm overrides.
//
// # Stop
//
// Stop asks the guest through the hook given to WithGuestShutdown (the
// owner of the agent connection), then presses the ACPI power button every
// second, each for up to the caller's timeout, then sends QMP quit, waits
// 3 s, and kills qemu with SIGKILL; it returns when the process has ended.
//
// # State
//
// Each VM is a directory under the driver's state root, named after the
// VM:
//
//	<root>/<name>/
//	  spec.json     the vm.Spec, written by Create (the directory appears
//	                atomically, by rename, with it)
//	  scratch.img   the writable layer (sparse raw ext4), when asked for
//	  lock          flock(2) held by Start, Stop and Remove
//	  run.json      the last start: qemu's pid and its start time (field 22
//	                of /proc/<pid>/stat), the accelerator, the time
//	  exit.json     when that run was seen to end
//	  qemu.pid      written by qemu itself (-pidfile)
//	  qemu.log      qemu's own stderr
//	  console.log   the guest console (unless the spec names another file)
//	  qmp.sock      QMP, for power-off, quit and status
//	  agent.sock    the guest control channel (virtio-serial port
//	                "vmcompose.agent")
//	  virtiofs-<i>.sock
//	                the vhost-user socket of share i
//	  virtiofsd.log the share daemons' stderr
//	  shares/<i>/   where share i is mounted, for its daemon's eyes only
//	  restoring     there while a qemu restored from a template waits
//	                for its state to be loaded
//
// qemu runs with the VM directory as its working directory and relative
// socket names, so deep state roots do not hit the 108-byte limit of unix
// socket paths.
//
// # Adoption
//
// A qemu process is a VM's only while its pid and start time both match
// run.json: a Driver in any process (a restarted supervisor) adopts running
// VMs just by looking, and a reused pid is never mistaken for one. qemu runs
// in its own process group so a terminal's Ctrl-C does not reach it; with
// vm.Spec.DieWithController it gets PR_SET_PDEATHSIG=SIGKILL instead, and
// dies with the process that started it.
//
// The package must not import compose or vmcompose packages other than vm
// and guest/agent.
package qemu
