// Package network is a compose project's virtual network, rootless and in
// process: one userspace Ethernet segment per compose network, each with a
// gVisor TCP/IP stack behind the segment's gateway, using
// gvisor-tap-vsock's gateway link endpoint.
//
// # Addressing
//
// A network's subnet is its ipam.config subnet, or else the next free
// 10.89.N.0/24 (N counting from 0, skipping configured subnets and the
// host's own). The gateway is the subnet's first address; instances get
// ipv4_address when set, else the lowest free address after the gateway.
// A NIC's MAC is mac_address when set, else 52:54:00 and three bytes of a
// hash of project, instance and network. Every NIC has its own unix
// socket in Config.StateDir.
//
// # What the gateway serves
//
//   - DHCP: only to MACs attached to the segment, always their static
//     lease, with router (except on internal networks), DNS server, search
//     domain and MTU. Guests may as well configure the same values
//     statically from the NIC.
//   - DNS on port 53 (UDP and TCP): an instance's name (web-1), its
//     service (web: every attached replica's address, rotated per query),
//     Endpoint.Names (container_name, hostname, "<project>-web-1") and the
//     per-network aliases, bare or under the search domain; PTR for
//     project addresses. A guest sees the names of every network it is
//     on, whichever of its gateways it asks, each answered with the
//     address on the shared network. Unknown single-label names and names
//     in the project's domain get NXDOMAIN; other names go to
//     Config.Resolver (the host's) for A, TXT, MX and SRV records, except
//     from internal networks; AAAA answers are empty (IPv4 only).
//     host.containers.internal and host.docker.internal are the gateway,
//     for every instance (see hostNames).
//   - NAT: TCP and UDP to outside addresses are made by the host's
//     sockets. Connections to the gateway address itself (other than DNS)
//     go to the host's 127.0.0.1, same port, for instances with
//     Endpoint.HostLoopback only; the rest are refused (TCP gets a reset,
//     UDP no answer), as rootless podman and Docker on Linux do.
//     127.0.0.0/8 and 0.0.0.0/8 are refused to everyone. Addresses of the
//     project's segments are refused, so VMs that share no network cannot
//     reach each other. Internal networks reach nothing outside. ICMP is
//     not forwarded: the gateway answers pings for itself only.
//   - Published ports: listeners on the host that dial the instance's
//     address on its default NIC through the segment.
//
// The switch only passes frames whose source MAC is the NIC's own, and
// to the gateway only IPv4 and ARP from the NIC's own address (or
// 0.0.0.0, before DHCP), so a VM must use the MAC and address its NIC was
// given, and the gateway can tell instances apart by source address.
//
// # Lifetime
//
// A VM's NIC joins its segment through its socket (QEMU:
// -netdev stream,id=netN,server=off,addr.type=unix,addr.path=SOCKET
// -device virtio-net-device,netdev=netN,mac=MAC; frames carry a 32-bit
// big-endian length). QEMU's stream netdev connects once, at start, and
// does not reconnect, so the network lives as long as the process that
// holds the Manager: when that process ends, the project's VMs lose their
// network and must be restarted. A VM restarted while the Manager lives
// connects again to the same socket. VMMs that hand over a datagram
// socket instead (vz's file-handle attachment) use ServeDatagram.
//
// # Imports
//
// It owns addressing, DHCP, DNS, NAT and port publishing. It reads compose
// types (compose-go) but must not import reconcile/, cmd/, vm/ or guest/
// (internal/importrules): the supervisor maps NICs to vm.Network and
// agent.Interface. It logs through the slog.Logger it is given, nothing
// otherwise (gvisor-tap-vsock's gateway link endpoint logs at logrus
// debug level only).
package network
