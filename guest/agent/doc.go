// Package agent is the control channel between the host and vminit, the init
// that runs as PID 1 in every guest: the wire protocol (shared by both sides)
// and the host-side Client.
//
// # Transport
//
// One byte stream per VM (a virtio-serial port named "vmcompose.agent" on
// QEMU, vsock where the backend has it), multiplexed with hashicorp/yamux.
// Before yamux starts, the host sends a hello line carrying a random nonce
// and discards what it reads until the guest echoes it (see Dial): a stream
// device such as virtio-serial may still hold bytes of an earlier connection,
// and the nonce makes a new connection start clean. The host is the yamux
// client and opens every stream; the guest only accepts.
//
// # Streams
//
// Each stream starts with one request header from the host and one response
// header from the guest. A header is a 4-byte big-endian length and that many
// bytes of JSON. What follows the headers depends on the operation:
//
//	hello     nothing; the response carries the guest's Status
//	start     nothing; the request carries the Spec
//	attach    raw bytes of the service's stdout or stderr, from the offset
//	          in the response, until the service's stream ends (EOF)
//	wait      the response is sent when the service has exited; the host
//	          closes the stream after reading it, which is the guest's
//	          proof that the exit status was delivered
//	signal    nothing
//	shutdown  as wait, after the guest stopped the service; the guest
//	          powers off once the host closed the stream
//	exec      frames both ways (see frame types below) until the exit frame
//	health    nothing; the response carries the HealthResult
//	input     stdin, stdin EOF, resize and signal frames from the host to
//	          the service (Spec.OpenStdin, Spec.Tty), until the host
//	          closes the stream; nothing comes back
//	sync      the host writes entries (a header each, SyncEntry, and a
//	          file's bytes) and an end marker without waiting; the
//	          response, with the SyncResult, comes after the end marker
//	          (at once for a target the guest refuses)
//	restart   nothing; the response, with the new pid, is sent once the
//	          service process was stopped and started again
//
// A new connection (the supervisor restarted) is a new yamux session: the
// service keeps running, and its output while nobody was attached is kept in
// a ring buffer per stream (the last RingSize bytes; older ones are
// dropped), addressed by byte offsets so a host that re-attaches asks for
// the first byte it lacks. While a host is attached nothing is dropped.
//
// Signals travel as names ("SIGTERM", or a number such as "15" meaning the
// Linux number), never as host syscall.Signal values, whose numbers differ
// between Linux and macOS.
//
// # What the host provides
//
// The guest finds its pieces by name, never by order:
//
//   - disks by virtio serial: "rootfs", the image's read-only ext4
//     (required; oci/rootfs builds it), and "scratch", the service's
//     writable disk, which the host must create already formatted as ext4
//     (vminit has no mkfs; `mkfs.ext4 -F -q -E lazy_itable_init=1` on a
//     sparse file works on Linux hosts). Without a scratch disk the overlay's
//     upper layer is a tmpfs and writes are lost at power-off.
//   - the channel: a virtio-serial port named PortName; on QEMU
//     `-device virtio-serial-device -chardev socket,id=agent,path=SOCK,
//     server=on,wait=off -device virtserialport,chardev=agent,name=
//     vmcompose.agent`. Connect to SOCK (retry a refused connect: QEMU
//     creates the file a moment before it listens), then Dial.
//   - the kernel command line: the console (e.g. console=ttyS0 or hvc0)
//     gets vminit's log lines, prefixed "vminit:", never the service's
//     output; "vminit.debug" adds debug lines; "panic=-1" with QEMU's
//     -no-reboot turns a crashed init into a QEMU exit.
//
// The service spec reaches the guest over the channel (Client.Start), not
// on the command line or a config disk: it can be large, and the answer
// (a bad user, a sysctl the kernel refuses) comes back on the same call.
// Start applies it in this order: hostname, /etc/hostname, /etc/hosts,
// /etc/resolv.conf, volumes, files, NICs, sysctls, then the process.
//
// # Life of a guest
//
// The guest boots to PhaseReady and waits for a host; the service runs
// once per boot. When it exits, every other process in the guest is killed
// (as in a container), and the guest powers off once a host has taken the
// exit status (Wait or Shutdown) and read its output streams to the end,
// or one minute after the exit if no host does. The VMM asks for a stop
// with the ACPI power button (QEMU system_powerdown) or Shutdown; SIGTERM
// to PID 1 inside the guest does the same. A host that missed the exit
// status finds it in the console log, on the last line with
// msg="service exited" (code=N signal=NAME).
//
// Start can be taken in two steps: Prepare does all of it but the process
// (and a read_only root's remount), leaving the guest in PhasePrepared,
// where Sync and Exec work on the service's final view of its files
// (mounts in place); Launch then starts the process. `vmcompose watch`
// uses it so that a VM that boots gets its synced files first.
//
// Restart (the restart operation) is the exception to "once per boot": the
// service process is stopped as Shutdown stops it, every other process
// killed, and the process started again from the same spec, with the
// mounts and files as they are; Wait and the attached output streams go
// on as if nothing happened. A host's Input stream then writes nowhere:
// open another.
//
// One host at a time: QEMU's socket chardev serves one connection, and
// a second Dial waits until the first connection closes.
//
// # Imports
//
// The package owns the protocol and the host-side client. It builds on every
// host OS (the supervisor on macOS uses it too) and must not import other
// vmcompose packages, nor anything Linux-only: vminit imports it, and host
// packages (vm/..., reconcile) import it, never the other way round.
package agent
