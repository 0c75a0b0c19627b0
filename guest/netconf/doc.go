// Package netconf configures the guest's network interfaces from the
// service spec: each NIC, found by the MAC address the host gave it, gets
// its MTU, addresses and, when given, the default route (rtnetlink and
// interface ioctls, no ip(8) in the guest).
//
// It runs inside the guest, on Linux only. It may import guest/agent; it
// must not import host packages (oci/, project/, vm/, reconcile/).
package netconf
