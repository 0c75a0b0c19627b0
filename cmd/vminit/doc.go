// Command vminit is the init (PID 1) of every vmcompose guest. The kernel
// starts it as /init from the initramfs. It sets up the overlay root, then
// serves the host over the control channel (guest/agent) and runs the
// service process; when the service has exited and the host has its exit
// status, it powers the VM off.
//
// Build it static: CGO_ENABLED=0 GOOS=linux go build ./cmd/vminit. It
// imports only guest/ packages and vm/initramfs/modload (made for the
// guest), never host ones (oci/, project/, vm/, reconcile/).
package main
