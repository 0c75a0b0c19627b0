package network

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// maxFrame bounds a frame read from a NIC: the MTU, an Ethernet header
// and a VLAN tag, with room to spare.
const maxFrame = 65535

// ethSwitch is a segment's Ethernet switch. Its ports are the gateway
// (the gVisor stack's link endpoint) and one per connected NIC, known by
// the MAC the NIC was given: a frame from a NIC must carry that MAC as
// its source, so no instance speaks as another. Frames go by destination
// MAC; broadcast and multicast go to every other port. The gateway takes
// only IPv4 and ARP, and only from the NIC's own address (see fromOwn).
type ethSwitch struct {
	gateway interface {
		DeliverNetworkPacket(tcpip.NetworkProtocolNumber, *stack.PacketBuffer)
		LinkAddress() tcpip.LinkAddress
	}

	// gatewayIP is the gateway's address: the only one ICMP reaches.
	gatewayIP tcpip.Address

	mu    sync.RWMutex
	ports map[tcpip.LinkAddress]*swPort
}

type swPort struct {
	conn     net.Conn
	datagram bool
	out      chan []byte
	done     chan struct{}
}

// portQueue is how many frames wait for a NIC before new ones are dropped.
const portQueue = 1024

func newSwitch() *ethSwitch {
	return &ethSwitch{ports: map[tcpip.LinkAddress]*swPort{}}
}

// DeliverNetworkPacket takes a frame from the gateway.
func (sw *ethSwitch) DeliverNetworkPacket(_ tcpip.NetworkProtocolNumber, pkt *stack.PacketBuffer) {
	frame := pkt.ToView().AsSlice()
	if len(frame) < header.EthernetMinimumSize {
		return
	}
	sw.forward(sw.gateway.LinkAddress(), frame, false)
}

// forward sends a frame from src to its destination NIC(s), and to the
// gateway when toGateway is set.
func (sw *ethSwitch) forward(src tcpip.LinkAddress, frame []byte, toGateway bool) {
	dst := header.Ethernet(frame).DestinationAddress()
	if dst[0]&1 == 0 { // unicast
		sw.mu.RLock()
		p := sw.ports[dst]
		sw.mu.RUnlock()
		if p != nil {
			p.write(frame)
		}
		return
	}
	sw.mu.RLock()
	targets := make([]*swPort, 0, len(sw.ports))
	for mac, p := range sw.ports {
		if mac != src {
			targets = append(targets, p)
		}
	}
	sw.mu.RUnlock()
	for _, p := range targets {
		p.write(frame)
	}
	if toGateway {
		sw.toGateway(frame)
	}
}

// pingsElsewhere says whether a frame to the gateway is ICMP for another
// address. The gateway's stack accepts every address (that is how it
// terminates NATed connections) and would answer pings for all of them,
// though ICMP is not forwarded: such pings must go unanswered, as for an
// unreachable host, rather than report a host that is not there.
func (sw *ethSwitch) pingsElsewhere(frame []byte) bool {
	if header.Ethernet(frame).Type() != header.IPv4ProtocolNumber {
		return false
	}
	ip := header.IPv4(frame[header.EthernetMinimumSize:])
	return ip.IsValid(len(ip)) && ip.TransportProtocol() == header.ICMPv4ProtocolNumber && ip.DestinationAddress() != sw.gatewayIP
}

func (sw *ethSwitch) toGateway(frame []byte) {
	eth := header.Ethernet(frame)
	data := buffer.MakeWithData(frame)
	data.TrimFront(header.EthernetMinimumSize)
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: data})
	sw.gateway.DeliverNetworkPacket(eth.Type(), pkt)
	pkt.DecRef()
}

// write queues a frame for the NIC. A full queue (a VM that stopped
// reading, such as a paused one) drops it, as a NIC's full ring would, so
// one VM never holds up the segment.
func (p *swPort) write(frame []byte) {
	select {
	case p.out <- frame:
	default:
	}
}

// writeLoop sends queued frames until the port is done or a write fails.
func (p *swPort) writeLoop() {
	for {
		var frame []byte
		select {
		case frame = <-p.out:
		case <-p.done:
			return
		}
		if p.datagram {
			// A full datagram socket buffer (macOS) says ENOBUFS: wait
			// a little, then drop the frame as a busy link would.
			for try := 0; try < 100; try++ {
				_, err := p.conn.Write(frame)
				if err == nil {
					break
				}
				if !errors.Is(err, syscall.ENOBUFS) {
					return
				}
				time.Sleep(100 * time.Microsecond)
			}
			continue
		}
		buf := make([]byte, 4+len(frame))
		binary.BigEndian.PutUint32(buf, uint32(len(frame)))
		copy(buf[4:], frame)
		if _, err := p.conn.Write(buf); err != nil {
			return // the reader sees the broken connection too
		}
	}
}

// fromOwn says whether the gateway may take a frame from the NIC whose
// address is own: IPv4 sent from own, or from 0.0.0.0 as a DHCP client
// does before it has its lease, and ARP that claims own (or 0.0.0.0, a
// probe) for the NIC's MAC. The gateway decides by source address what an instance may
// reach (the host loopback opt-in, the names it sees), so a guest must
// not pass as another, neither by its packets nor by teaching the
// gateway's ARP cache. Other types (IPv6) have nothing to reach there.
func fromOwn(frame []byte, mac tcpip.LinkAddress, own tcpip.Address) bool {
	payload := frame[header.EthernetMinimumSize:]
	var src tcpip.Address
	switch header.Ethernet(frame).Type() {
	case header.IPv4ProtocolNumber:
		ip := header.IPv4(payload)
		if !ip.IsValid(len(payload)) {
			return false
		}
		src = ip.SourceAddress()
	case header.ARPProtocolNumber:
		a := header.ARP(payload)
		if !a.IsValid() || tcpip.LinkAddress(a.HardwareAddressSender()) != mac {
			return false
		}
		src = tcpip.AddrFrom4Slice(a.ProtocolAddressSender())
	default:
		return false
	}
	return src == own || src == header.IPv4Any
}

// serve runs a NIC's connection until it ends or ctx is done. On a stream
// connection frames are framed as QEMU's stream netdev does (a 32-bit
// big-endian length, then the frame); on a datagram one each message is
// a frame. A new connection for the same MAC (a restarted VM) replaces
// the old one.
func (sw *ethSwitch) serve(ctx context.Context, mac string, ip netip.Addr, conn net.Conn, datagram bool) error {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return err
	}
	own, ownIP := tcpip.LinkAddress(hw), addr(ip)
	p := &swPort{conn: conn, datagram: datagram, out: make(chan []byte, portQueue), done: make(chan struct{})}
	go p.writeLoop()
	defer close(p.done)
	sw.mu.Lock()
	if old := sw.ports[own]; old != nil {
		old.conn.Close()
	}
	sw.ports[own] = p
	sw.mu.Unlock()
	defer func() {
		sw.mu.Lock()
		if sw.ports[own] == p {
			delete(sw.ports, own)
		}
		sw.mu.Unlock()
		conn.Close()
	}()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	gw := sw.gateway.LinkAddress()
	read := streamReader(conn)
	if datagram {
		read = datagramReader(conn)
	}
	for {
		frame, err := read()
		if err != nil {
			return err
		}
		if len(frame) < header.EthernetMinimumSize {
			continue
		}
		eth := header.Ethernet(frame)
		if eth.SourceAddress() != own {
			continue // spoofed
		}
		toGW := fromOwn(frame, own, ownIP)
		if eth.DestinationAddress() == gw {
			if toGW && !sw.pingsElsewhere(frame) {
				sw.toGateway(frame)
			}
			continue
		}
		sw.forward(own, frame, toGW)
	}
}

// streamReader reads length-prefixed frames.
func streamReader(conn net.Conn) func() ([]byte, error) {
	r := bufio.NewReaderSize(conn, 64<<10)
	var size [4]byte
	return func() ([]byte, error) {
		if _, err := io.ReadFull(r, size[:]); err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint32(size[:])
		if n > maxFrame {
			return nil, fmt.Errorf("frame of %d bytes", n)
		}
		frame := make([]byte, n)
		if _, err := io.ReadFull(r, frame); err != nil {
			return nil, err
		}
		return frame, nil
	}
}

// datagramReader reads one frame per message.
func datagramReader(conn net.Conn) func() ([]byte, error) {
	buf := make([]byte, maxFrame)
	return func() ([]byte, error) {
		n, err := conn.Read(buf)
		if err != nil {
			return nil, err
		}
		return append([]byte(nil), buf[:n]...), nil
	}
}
