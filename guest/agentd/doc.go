// Package agentd is vminit's side of the control channel: it serves the
// guest/agent protocol over the virtio-serial port (or any stream), runs the
// service process (and restarts it in place when asked) and exec and
// healthcheck processes, applies file syncs beneath a target without
// following the guest's symlinks out of it, reaps every child as
// PID 1 must, keeps the service's output in ring buffers for hosts that
// attach late or re-attach, and decides when the VM may power off.
//
// It runs inside the guest, on Linux only. It may import guest/agent,
// guest/boot, guest/resolve and guest/netconf; it must not import host packages (oci/, project/, vm/,
// reconcile/).
package agentd
