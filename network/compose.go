package network

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"

	"github.com/compose-spec/compose-go/v2/types"
)

// NetworksOf returns a project's networks (compose keys, sorted, so
// subnets are allocated in a stable order) with their ipam subnet and
// internal flag. External networks become project segments like the rest:
// there is no host network to join.
func NetworksOf(p *types.Project) []NetworkConfig {
	var out []NetworkConfig
	for name, n := range p.Networks {
		nc := NetworkConfig{Name: name, Internal: n.Internal}
		for _, pool := range n.Ipam.Config {
			if pool == nil || pool.Subnet == "" {
				continue
			}
			if a, err := netip.ParsePrefix(pool.Subnet); err == nil && !a.Addr().Is4() {
				continue // IPv6 pools are not served
			}
			nc.Subnet, nc.Gateway = pool.Subnet, pool.Gateway
			break
		}
		out = append(out, nc)
	}
	slices.SortFunc(out, func(a, b NetworkConfig) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// EndpointOf returns the DNS identity of one instance of a service: the
// instance name, the service name, and as more names container_name,
// hostname and compose's container name "<project>-<instance>".
func EndpointOf(p *types.Project, svc types.ServiceConfig, instance string) Endpoint {
	ep := Endpoint{Instance: instance, Service: svc.Name}
	for _, n := range []string{svc.ContainerName, svc.Hostname} {
		if n != "" {
			ep.Names = append(ep.Names, n)
		}
	}
	if p != nil && p.Name != "" {
		ep.Names = append(ep.Names, p.Name+"-"+instance)
	}
	return ep
}

// AttachmentsOf returns a service's networks in NIC order: highest
// gw_priority first, then highest priority, then by name; a service
// without networks is on "default", one with network_mode: none on none.
// The service-level mac_address applies to the first NIC when that network
// sets none. Other network modes (host, service:, container:) share a
// network stack, which a VM cannot: they are refused.
func AttachmentsOf(svc types.ServiceConfig) ([]Attachment, error) {
	switch svc.NetworkMode {
	case "":
	case "none":
		return nil, nil
	default:
		return nil, fmt.Errorf("service %q: network_mode %q is not supported: a VM has a network stack of its own: use networks:, or network_mode: none for no network", svc.Name, svc.NetworkMode)
	}
	type entry struct {
		name string
		cfg  types.ServiceNetworkConfig
	}
	var list []entry
	for name, c := range svc.Networks {
		e := entry{name: name}
		if c != nil {
			e.cfg = *c
		}
		list = append(list, e)
	}
	if len(list) == 0 {
		list = append(list, entry{name: "default"})
	}
	slices.SortFunc(list, func(a, b entry) int {
		if c := cmp.Compare(b.cfg.GatewayPriority, a.cfg.GatewayPriority); c != 0 {
			return c
		}
		if c := cmp.Compare(b.cfg.Priority, a.cfg.Priority); c != 0 {
			return c
		}
		return cmp.Compare(a.name, b.name)
	})
	out := make([]Attachment, len(list))
	for i, e := range list {
		a := Attachment{Network: e.name, Aliases: e.cfg.Aliases, MAC: e.cfg.MacAddress}
		if e.cfg.Ipv4Address != "" {
			ip, err := netip.ParseAddr(e.cfg.Ipv4Address)
			if err != nil || !ip.Is4() {
				return nil, fmt.Errorf("service %q: network %q: ipv4_address %q is not an IPv4 address", svc.Name, e.name, e.cfg.Ipv4Address)
			}
			a.IP = ip
		}
		if i == 0 && a.MAC == "" {
			a.MAC = svc.MacAddress
		}
		out[i] = a
	}
	return out, nil
}
