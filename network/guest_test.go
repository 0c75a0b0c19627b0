package network_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/link/channel"
	"gvisor.dev/gvisor/pkg/tcpip/link/ethernet"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"

	"github.com/vmcompose/vmcompose/network"
)

// fakeGuest is a guest in the test process: its own gVisor stack on the
// NIC's socket, framing as QEMU's stream netdev does (32-bit big-endian
// length, then the Ethernet frame), configured statically from the NIC.
type fakeGuest struct {
	nic   network.NIC
	stack *stack.Stack
}

func newFakeGuest(t *testing.T, nic network.NIC) *fakeGuest {
	t.Helper()
	conn, err := net.Dial("unix", nic.Socket)
	if err != nil {
		t.Fatal(err)
	}
	return newFakeGuestConn(t, nic, conn, false)
}

// newFakeGuestConn is a fake guest on conn: QEMU's stream framing, or one
// frame per message when datagram is set (vz's file-handle attachment).
func newFakeGuestConn(t *testing.T, nic network.NIC, conn net.Conn, datagram bool) *fakeGuest {
	t.Helper()
	hw, err := net.ParseMAC(nic.MAC)
	if err != nil {
		t.Fatal(err)
	}
	ch := channel.New(256, uint32(nic.MTU), tcpip.LinkAddress(hw))
	s := stack.New(stack.Options{
		NetworkProtocols:   []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol},
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4},
	})
	if terr := s.CreateNIC(1, ethernet.New(ch)); terr != nil {
		t.Fatal(terr)
	}
	a := nic.Address.Addr().As4()
	if terr := s.AddProtocolAddress(1, tcpip.ProtocolAddress{
		Protocol:          ipv4.ProtocolNumber,
		AddressWithPrefix: tcpip.AddressWithPrefix{Address: tcpip.AddrFrom4(a), PrefixLen: nic.Address.Bits()},
	}, stack.AddressProperties{}); terr != nil {
		t.Fatal(terr)
	}
	sub, _ := tcpip.NewSubnet(tcpip.AddrFrom4(nic.Address.Masked().Addr().As4()), tcpip.MaskFromBytes(net.CIDRMask(nic.Address.Bits(), 32)))
	s.SetRouteTable([]tcpip.Route{
		{Destination: sub, NIC: 1},
		{Destination: header.IPv4EmptySubnet, Gateway: tcpip.AddrFrom4(nic.Gateway.As4()), NIC: 1},
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // guest to network
		defer wg.Done()
		var size [4]byte
		for {
			pkt := ch.ReadContext(ctx)
			if pkt == nil {
				return
			}
			frame := pkt.ToView().AsSlice()
			if !datagram {
				binary.BigEndian.PutUint32(size[:], uint32(len(frame)))
				frame = append(size[:], frame...)
			}
			_, err := conn.Write(frame)
			pkt.DecRef()
			if err != nil {
				return
			}
		}
	}()
	go func() { // network to guest
		defer wg.Done()
		r := bufio.NewReader(conn)
		var size [4]byte
		buf := make([]byte, 65536)
		for {
			var frame []byte
			if datagram {
				n, err := conn.Read(buf)
				if err != nil {
					return
				}
				frame = append(frame, buf[:n]...)
			} else {
				if _, err := io.ReadFull(r, size[:]); err != nil {
					return
				}
				frame = make([]byte, binary.BigEndian.Uint32(size[:]))
				if _, err := io.ReadFull(r, frame); err != nil {
					return
				}
			}
			pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData(frame)})
			ch.InjectInbound(0, pkt)
			pkt.DecRef()
		}
	}()
	t.Cleanup(func() {
		cancel()
		conn.Close()
		wg.Wait()
		s.Close()
	})
	return &fakeGuest{nic: nic, stack: s}
}

func full(ap netip.AddrPort) tcpip.FullAddress {
	return tcpip.FullAddress{NIC: 1, Addr: tcpip.AddrFrom4(ap.Addr().As4()), Port: ap.Port()}
}

func (g *fakeGuest) dialTCP(ctx context.Context, ap netip.AddrPort) (net.Conn, error) {
	return gonet.DialContextTCP(ctx, g.stack, full(ap), ipv4.ProtocolNumber)
}

func (g *fakeGuest) dialUDP(ap netip.AddrPort) (net.Conn, error) {
	return gonet.DialUDP(g.stack, nil, ptr(full(ap)), ipv4.ProtocolNumber)
}

func (g *fakeGuest) listenTCP(t *testing.T, port uint16) net.Listener {
	t.Helper()
	ln, err := gonet.ListenTCP(g.stack, full(netip.AddrPortFrom(g.nic.Address.Addr(), port)), ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

func (g *fakeGuest) listenUDP(t *testing.T, port uint16) net.PacketConn {
	t.Helper()
	pc, err := gonet.DialUDP(g.stack, ptr(full(netip.AddrPortFrom(g.nic.Address.Addr(), port))), nil, ipv4.ProtocolNumber)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func ptr[T any](v T) *T { return &v }

// gatewayMAC is the segments' gateway MAC (network's constant).
const gatewayMAC = "5a:94:ef:e4:0c:dd"

// knowGateway adds the gateway to the guest's neighbour table, so it
// sends without asking ARP.
func (g *fakeGuest) knowGateway(t *testing.T) {
	t.Helper()
	hw, _ := net.ParseMAC(gatewayMAC)
	if terr := g.stack.AddStaticNeighbor(1, ipv4.ProtocolNumber, tcpip.AddrFrom4(g.nic.Gateway.As4()), tcpip.LinkAddress(hw)); terr != nil {
		t.Fatal(terr)
	}
}
