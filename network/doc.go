// Package network is a compose project's virtual network, rootless and in
// process: one userspace Ethernet segment per compose network, built on
// gvisor-tap-vsock's switch and gVisor's TCP/IP stack.
//
// Each segment has a gateway (the first address of its subnet) that
// answers DHCP with static leases by MAC, serves DNS for the project's
// names (service, replica, container_name, hostname, per-network aliases),
// NATs outbound TCP and UDP through the host's sockets, and maps
// connections to the gateway address itself to the host's loopback
// (host.containers.internal, host.docker.internal). Published ports listen
// on the host and dial into the segment.
//
// A VM's NIC joins a segment through a unix stream socket the Manager
// listens on (QEMU: -netdev stream,server=off,addr.type=unix,addr.path=...;
// the frames are QEMU's: a 32-bit big-endian length, then the frame).
// QEMU's stream netdev does not reconnect, so the network lives as long as
// the process that holds the Manager: when that process ends, the project's
// VMs lose their network and must be restarted.
//
// It owns addressing, DNS, DHCP, NAT and port publishing. It reads compose
// types (compose-go) but must not import reconcile/, cmd/, vm/ or guest/:
// the supervisor maps NICs to vm.Network and agent.Interface.
package network
