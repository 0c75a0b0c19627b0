package network

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
)

// autoBase is where subnets without an ipam subnet come from: 10.89.N.0/24,
// N counting up from 0, skipping subnets that are configured or overlap the
// host's own.
var autoBase = netip.MustParseAddr("10.89.0.0")

// allocateSubnets gives every network a subnet: its own (validated) or the
// next free 10.89.N.0/24. Configured subnets must not overlap each other;
// host lists the host's interface subnets, which allocated ones avoid.
func allocateSubnets(nets []NetworkConfig, host []netip.Prefix) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, len(nets))
	var taken []netip.Prefix
	for i, n := range nets {
		if n.Subnet == "" {
			continue
		}
		p, err := netip.ParsePrefix(n.Subnet)
		if err != nil {
			return nil, fmt.Errorf("network %q: subnet %q: not a CIDR prefix such as 10.90.0.0/24", n.Name, n.Subnet)
		}
		if !p.Addr().Is4() {
			return nil, fmt.Errorf("network %q: subnet %q: only IPv4 subnets are supported", n.Name, n.Subnet)
		}
		if p.Bits() > 29 || p.Bits() < 8 {
			return nil, fmt.Errorf("network %q: subnet %q: the prefix length must be between /8 and /29", n.Name, n.Subnet)
		}
		p = p.Masked()
		for j, q := range out[:i] {
			if q.IsValid() && q.Overlaps(p) {
				return nil, fmt.Errorf("network %q: subnet %s overlaps network %q's %s", n.Name, p, nets[j].Name, q)
			}
		}
		out[i] = p
		taken = append(taken, p)
	}
	next := 0
	for i := range nets {
		if out[i].IsValid() {
			continue
		}
		for ; ; next++ {
			if next > 255 {
				return nil, fmt.Errorf("network %q: no free subnet left in 10.89.0.0/16: set ipam.config.subnet", nets[i].Name)
			}
			b := autoBase.As4()
			b[2] = byte(next)
			p := netip.PrefixFrom(netip.AddrFrom4(b), 24)
			if overlapsAny(p, taken) || overlapsAny(p, host) {
				continue
			}
			out[i] = p
			taken = append(taken, p)
			next++
			break
		}
	}
	return out, nil
}

func overlapsAny(p netip.Prefix, list []netip.Prefix) bool {
	for _, q := range list {
		if q.Overlaps(p) {
			return true
		}
	}
	return false
}

// hostSubnets are the IPv4 subnets of the host's interfaces, loopback
// excluded.
func hostSubnets() []netip.Prefix {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		p, err := netip.ParsePrefix(ipn.String())
		if err != nil || !p.Addr().Is4() || p.Addr().IsLoopback() {
			continue
		}
		out = append(out, p.Masked())
	}
	return out
}

// gatewayOf is the first host address of p.
func gatewayOf(p netip.Prefix) netip.Addr { return p.Addr().Next() }

// broadcastOf is the last address of p.
func broadcastOf(p netip.Prefix) netip.Addr {
	b := p.Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// macFor derives a stable MAC for an instance's NIC on a network: QEMU's
// 52:54:00 prefix and three bytes of a hash. try > 0 gives other
// candidates when one is taken.
func macFor(project, instance, network string, try int) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%s\x00%d", project, instance, network, try))
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", h[0], h[1], h[2])
}
