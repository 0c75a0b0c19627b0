package network

import (
	"net"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/rfc1035label"
)

// leaseTime is what DHCP offers; the address never changes while the
// instance stays attached.
const leaseTime = time.Hour

func (s *segment) serveDHCP() {
	buf := make([]byte, 4096)
	for {
		n, peer, err := s.dhcp.ReadFrom(buf)
		if err != nil {
			return
		}
		req, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			continue
		}
		reply := s.dhcpReply(req)
		if reply == nil {
			continue
		}
		to, ok := peer.(*net.UDPAddr)
		if !ok {
			continue
		}
		if to.IP == nil || to.IP.To4().Equal(net.IPv4zero) {
			to = &net.UDPAddr{IP: net.IPv4bcast, Port: to.Port}
		}
		if _, err := s.dhcp.WriteTo(reply.ToBytes(), to); err != nil {
			s.m.log.Debug("dhcp reply", "network", s.name, "err", err)
		}
	}
}

// dhcpReply answers DISCOVER with an offer and REQUEST with an ack of the
// MAC's static lease; unknown MACs and other messages get nothing.
func (s *segment) dhcpReply(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	if req.OpCode != dhcpv4.OpcodeBootRequest {
		return nil
	}
	mac := req.ClientHWAddr.String()
	ip, ok := s.lease(mac)
	if !ok {
		s.m.log.Debug("dhcp: no lease", "network", s.name, "mac", mac)
		return nil
	}
	var typ dhcpv4.MessageType
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		if want := req.RequestedIPAddress(); want != nil && !want.IsUnspecified() && !want.Equal(net.IP(ip.AsSlice())) {
			typ = dhcpv4.MessageTypeNak
		} else {
			typ = dhcpv4.MessageTypeAck
		}
	default:
		return nil
	}
	reply, err := dhcpv4.NewReplyFromRequest(req)
	if err != nil {
		return nil
	}
	gw := net.IP(s.gateway.AsSlice())
	reply.UpdateOption(dhcpv4.OptMessageType(typ))
	reply.UpdateOption(dhcpv4.OptServerIdentifier(gw))
	if typ == dhcpv4.MessageTypeNak {
		return reply
	}
	reply.YourIPAddr = net.IP(ip.AsSlice())
	reply.UpdateOption(dhcpv4.OptIPAddressLeaseTime(leaseTime))
	reply.UpdateOption(dhcpv4.OptSubnetMask(net.CIDRMask(s.prefix.Bits(), 32)))
	if !s.internal {
		reply.UpdateOption(dhcpv4.OptRouter(gw))
	}
	reply.UpdateOption(dhcpv4.OptDNS(gw))
	reply.UpdateOption(dhcpv4.Option{Code: dhcpv4.OptionInterfaceMTU, Value: dhcpv4.Uint16(DefaultMTU)})
	reply.UpdateOption(dhcpv4.OptDomainSearch(&rfc1035label.Labels{Labels: []string{s.m.domain}}))
	return reply
}
