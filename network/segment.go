package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/containers/gvisor-tap-vsock/pkg/tap"
	"github.com/miekg/dns"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

const (
	nicID = tcpip.NICID(1)
	// gatewayMAC is every segment's gateway: the segments are separate
	// switches, so they can share it.
	gatewayMAC = "5a:94:ef:e4:0c:dd"
	// dialTimeout bounds outbound NAT connects on the host.
	dialTimeout = 10 * time.Second
)

// segment is one compose network: a switch the VMs' NICs join and a gVisor
// stack behind the gateway address serving DHCP, DNS and NAT.
type segment struct {
	m        *Manager
	index    int
	name     string
	internal bool
	prefix   netip.Prefix
	gateway  netip.Addr

	stack *stack.Stack
	sw    *ethSwitch

	// leases maps MAC to address; guarded by m.mu.
	leases map[string]netip.Addr
	// rr rotates multi-address DNS answers; guarded by its own atomics.
	rr rotor

	dhcp   net.PacketConn
	dnsUDP *dns.Server
	dnsTCP *dns.Server
}

func newSegment(m *Manager, index int, cfg NetworkConfig, prefix netip.Prefix) (*segment, error) {
	s := &segment{
		m:        m,
		index:    index,
		name:     cfg.Name,
		internal: cfg.Internal,
		prefix:   prefix,
		gateway:  gatewayOf(prefix),
		leases:   map[string]netip.Addr{},
	}
	if cfg.Gateway != "" {
		gw, err := netip.ParseAddr(cfg.Gateway)
		if err != nil || !gw.Is4() || !prefix.Contains(gw) || gw == prefix.Addr() || gw == broadcastOf(prefix) {
			return nil, fmt.Errorf("gateway %q: not a host address of the subnet %s", cfg.Gateway, prefix)
		}
		s.gateway = gw
	}
	link, err := tap.NewLinkEndpoint(false, DefaultMTU, gatewayMAC, s.gateway.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("gateway link: %w", err)
	}
	s.sw = newSwitch()
	s.sw.gateway = link
	s.sw.gatewayIP = addr(s.gateway)
	link.Connect(s.sw)

	s.stack = stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	if terr := s.stack.CreateNIC(nicID, link); terr != nil {
		return nil, fmt.Errorf("gateway NIC: %s", terr)
	}
	if terr := s.stack.AddProtocolAddress(nicID, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: addr(s.gateway).WithPrefix(),
	}, stack.AddressProperties{}); terr != nil {
		return nil, fmt.Errorf("gateway address: %s", terr)
	}
	// Spoofing and promiscuous mode let the gateway terminate connections
	// to any address, which is how outbound NAT works.
	s.stack.SetSpoofing(nicID, true)
	s.stack.SetPromiscuousMode(nicID, true)
	sub, err := tcpip.NewSubnet(addr(prefix.Addr()), tcpip.MaskFromBytes(net.CIDRMask(prefix.Bits(), 32)))
	if err != nil {
		return nil, fmt.Errorf("subnet: %w", err)
	}
	s.stack.SetRouteTable([]tcpip.Route{{Destination: sub, NIC: nicID}})

	s.stack.SetTransportProtocolHandler(tcp.ProtocolNumber, tcp.NewForwarder(s.stack, 0, 64, s.forwardTCP).HandlePacket)
	s.stack.SetTransportProtocolHandler(udp.ProtocolNumber, udp.NewForwarder(s.stack, s.forwardUDP).HandlePacket)

	if err := s.startDHCP(); err != nil {
		s.close()
		return nil, fmt.Errorf("DHCP server: %w", err)
	}
	if err := s.startDNS(); err != nil {
		s.close()
		return nil, fmt.Errorf("DNS server: %w", err)
	}
	return s, nil
}

func addr(a netip.Addr) tcpip.Address { return tcpip.AddrFrom4(a.As4()) }

func fromTCPIP(a tcpip.Address) netip.Addr {
	if a.Len() != 4 {
		return netip.Addr{}
	}
	return netip.AddrFrom4(a.As4())
}

func (s *segment) close() {
	if s.dnsUDP != nil {
		s.dnsUDP.Shutdown()
	}
	if s.dnsTCP != nil {
		s.dnsTCP.Shutdown()
	}
	if s.dhcp != nil {
		s.dhcp.Close()
	}
	s.stack.Close()
}

// macTaken and the address helpers run with m.mu held.
func (s *segment) macTaken(mac string) bool {
	_, ok := s.leases[mac]
	return ok
}

func (s *segment) ipTaken(ip netip.Addr) bool {
	for _, a := range s.leases {
		if a == ip {
			return true
		}
	}
	return false
}

// usable says why ip cannot be a NIC's address on s, or nil.
func (s *segment) usable(ip netip.Addr) error {
	switch {
	case !ip.Is4() || !s.prefix.Contains(ip):
		return fmt.Errorf("not in the network's subnet %s", s.prefix)
	case ip == s.prefix.Addr() || ip == broadcastOf(s.prefix):
		return fmt.Errorf("the subnet's network or broadcast address")
	case ip == s.gateway:
		return fmt.Errorf("the network's gateway")
	case s.ipTaken(ip):
		return fmt.Errorf("taken by another instance")
	}
	return nil
}

// free is the lowest free host address that is not the gateway.
func (s *segment) free() (netip.Addr, bool) {
	last := broadcastOf(s.prefix)
	for a := s.prefix.Addr().Next(); a.IsValid() && a.Less(last); a = a.Next() {
		if a != s.gateway && !s.ipTaken(a) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

// lease returns the address reserved for mac.
func (s *segment) lease(mac string) (netip.Addr, bool) {
	s.m.mu.RLock()
	defer s.m.mu.RUnlock()
	a, ok := s.leases[mac]
	return a, ok
}

// dial connects from the gateway to ap on the segment.
func (s *segment) dial(ctx context.Context, network string, ap netip.AddrPort) (net.Conn, error) {
	full := tcpip.FullAddress{NIC: nicID, Addr: addr(ap.Addr()), Port: ap.Port()}
	switch network {
	case "tcp", "tcp4":
		return gonet.DialContextTCP(ctx, s.stack, full, ipv4.ProtocolNumber)
	case "udp", "udp4":
		return gonet.DialUDP(s.stack, nil, &full, ipv4.ProtocolNumber)
	}
	return nil, fmt.Errorf("network %q: dialling %s: only tcp and udp are supported", s.name, network)
}

// thisNetwork is 0.0.0.0/8, "this host on this network": the host's
// sockets take 0.0.0.0 for its own loopback.
var thisNetwork = netip.MustParsePrefix("0.0.0.0/8")

// outboundTarget decides where a guest's connection from src to dst goes
// on the host. The gateway's address maps to the host's 127.0.0.1, same
// port, for an instance that opted in (Endpoint.HostLoopback) and is
// refused for every other: a host service bound to its loopback trusts
// whoever can connect, and an image is untrusted code. The host's
// loopback is reached no other way: 127.0.0.0/8 and 0.0.0.0/8 are
// refused to everyone (a guest can send them to the gateway by hand),
// as are the addresses of the project's segments (the other gateways
// too), link-local, multicast and broadcast ones. Internal networks
// reach nothing.
func (s *segment) outboundTarget(src, dst netip.Addr, port uint16) (string, bool) {
	if s.internal || !dst.Is4() {
		return "", false
	}
	if dst == s.gateway {
		if !s.m.hostLoopback(s, src) {
			return "", false
		}
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(port))), true
	}
	if dst.IsLoopback() || thisNetwork.Contains(dst) || dst.IsLinkLocalUnicast() || dst.IsMulticast() || dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return "", false
	}
	for _, p := range s.m.subnets {
		if p.Contains(dst) {
			return "", false
		}
	}
	return net.JoinHostPort(dst.String(), strconv.Itoa(int(port))), true
}

// hostLoopback says whether the instance with address src on s opted in
// to the host's loopback. The switch lets a NIC speak to the gateway only
// from its own address, so src is the instance's.
func (m *Manager) hostLoopback(s *segment, src netip.Addr) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	in := m.instanceAt(s, src)
	return in != nil && in.ep.HostLoopback
}

func (s *segment) forwardTCP(r *tcp.ForwarderRequest) {
	id := r.ID()
	target, ok := s.outboundTarget(fromTCPIP(id.RemoteAddress), fromTCPIP(id.LocalAddress), id.LocalPort)
	if !ok {
		s.m.log.Debug("outbound tcp refused", "network", s.name, "from", fromTCPIP(id.RemoteAddress), "to", fromTCPIP(id.LocalAddress), "port", id.LocalPort)
		r.Complete(true)
		return
	}
	d := net.Dialer{Timeout: dialTimeout}
	out, err := d.DialContext(s.m.ctx, "tcp", target)
	if err != nil {
		s.m.log.Debug("outbound tcp", "network", s.name, "to", target, "err", err)
		r.Complete(true)
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	r.Complete(false)
	if terr != nil {
		out.Close()
		return
	}
	pipe(gonet.NewTCPConn(&wq, ep), out)
}

func (s *segment) forwardUDP(r *udp.ForwarderRequest) {
	id := r.ID()
	target, ok := s.outboundTarget(fromTCPIP(id.RemoteAddress), fromTCPIP(id.LocalAddress), id.LocalPort)
	if !ok {
		return
	}
	var wq waiter.Queue
	ep, terr := r.CreateEndpoint(&wq)
	if terr != nil {
		return
	}
	guest := gonet.NewUDPConn(&wq, ep)
	go func() {
		defer guest.Close()
		out, err := net.Dial("udp", target)
		if err != nil {
			s.m.log.Debug("outbound udp", "network", s.name, "to", target, "err", err)
			return
		}
		defer out.Close()
		udpPair(guest, out, udpIdle)
	}()
}

// startDHCP serves DHCP on the gateway: only MACs with a lease get an
// answer, with the static address, the gateway as router and DNS server,
// the search domain and the MTU.
func (s *segment) startDHCP() error {
	var wq waiter.Queue
	ep, terr := s.stack.NewEndpoint(udp.ProtocolNumber, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return errors.New(terr.String())
	}
	ep.SocketOptions().SetBroadcast(true)
	if terr := ep.Bind(tcpip.FullAddress{NIC: nicID, Port: 67}); terr != nil {
		ep.Close()
		return errors.New(terr.String())
	}
	s.dhcp = gonet.NewUDPConn(&wq, ep)
	go s.serveDHCP()
	return nil
}

// startDNS serves DNS on the gateway's port 53, UDP and TCP.
func (s *segment) startDNS() error {
	gw := tcpip.FullAddress{NIC: nicID, Addr: addr(s.gateway), Port: 53}
	pc, err := gonet.DialUDP(s.stack, &gw, nil, ipv4.ProtocolNumber)
	if err != nil {
		return err
	}
	ln, err := gonet.ListenTCP(s.stack, gw, ipv4.ProtocolNumber)
	if err != nil {
		pc.Close()
		return err
	}
	h := dns.HandlerFunc(s.serveDNS)
	s.dnsUDP = &dns.Server{PacketConn: pc, Handler: h}
	s.dnsTCP = &dns.Server{Listener: ln, Handler: h}
	for _, srv := range []*dns.Server{s.dnsUDP, s.dnsTCP} {
		errc := make(chan error, 1)
		srv.NotifyStartedFunc = func() { errc <- nil }
		go func() {
			if err := srv.ActivateAndServe(); err != nil {
				select {
				case errc <- err:
				default:
				}
			}
		}()
		if err := <-errc; err != nil {
			return err
		}
	}
	return nil
}
