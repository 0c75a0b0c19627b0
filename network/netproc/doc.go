// Package netproc runs a project's virtual network in a process of its
// own and is the supervisor's client of that process.
//
// The network process (`vmcompose network`, Server) holds the project's
// network (package network): QEMU's stream NICs do not reconnect, so the
// network must outlive a supervisor for a new one to adopt networked VMs
// without booting them again. The supervisor starts it on demand through
// Networks, which attaches instances (Record: endpoint, attachments,
// published ports, kept in the state file so that a new supervisor
// attaches them again with the same addresses), and one-off VMs of
// `vmcompose run` (AttachOneOff). It ends after a down, or when a
// supervisor exits with no VM running.
//
// Networks watches the process it started or adopted (a pidfd on Linux:
// its parent may have been an earlier supervisor). When it dies unasked,
// Watch reports the Loss, and the next attach starts another process with
// every instance that was attached attached again.
//
// In the project's state dir:
//
//	network.lock   flock(2) of the running network process
//	network.sock   its socket (see server.go)
//	network.log    its log
//	net/           the NICs' sockets, one per VM and network
//
// # Imports
//
// netproc knows the network, VM specs and the agent's guest spec it fills
// with NICs; it knows nothing of plans, the supervisor or the CLI.
package netproc
