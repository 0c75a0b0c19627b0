package network_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"

	"github.com/vmcompose/vmcompose/network"
)

// hostOnly is a TCP listener on one of the host's loopback addresses
// that greets and counts the connections it accepts.
type hostOnly struct {
	ln       net.Listener
	accepted atomic.Int32
}

func listenHostOnly(t *testing.T, addr string) *hostOnly {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	h := &hostOnly{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.accepted.Add(1)
			io.WriteString(c, "hello from the host")
			c.Close()
		}
	}()
	return h
}

// waitAccepted waits up to 2 s for the listener to have accepted n.
func (h *hostOnly) waitAccepted(n int32) bool {
	for deadline := time.Now().Add(2 * time.Second); h.accepted.Load() != n; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			return false
		}
	}
	return true
}

func (h *hostOnly) port() uint16 { return uint16(h.ln.Addr().(*net.TCPAddr).Port) }

// udpEcho is a UDP echo server on the host's 127.0.0.1.
func udpEcho(t *testing.T) uint16 {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo "), buf[:n]...), from)
		}
	}()
	return uint16(pc.LocalAddr().(*net.UDPAddr).Port)
}

// TestHostLoopback: a guest's TCP and UDP to its gateway's address reach
// the host's 127.0.0.1 only when its instance opted in; without, TCP is
// refused at once and UDP goes unanswered. The opt-in holds on every
// network of the instance.
func TestHostLoopback(t *testing.T) {
	m, _ := newManager(t, network.NetworkConfig{Name: "a"}, network.NetworkConfig{Name: "b"})
	shutNICs := attach(t, m, network.Endpoint{Instance: "shut-1", Service: "shut"}, network.Attachment{Network: "a"}, network.Attachment{Network: "b"})
	openNICs := attach(t, m, network.Endpoint{Instance: "open-1", Service: "open", HostLoopback: true}, network.Attachment{Network: "a"}, network.Attachment{Network: "b"})
	host := listenHostOnly(t, "127.0.0.1:0")
	echo := udpEcho(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for i := range shutNICs {
		shut, open := newFakeGuest(t, shutNICs[i]), newFakeGuest(t, openNICs[i])
		gw := shutNICs[i].Gateway

		t0 := time.Now()
		if c, err := shut.dialTCP(ctx, netip.AddrPortFrom(gw, host.port())); err == nil {
			b, _ := io.ReadAll(c)
			c.Close()
			t.Errorf("network %s: a guest that did not opt in reached the host's 127.0.0.1 through %s: read %q", shutNICs[i].Network, gw, b)
		} else if d := time.Since(t0); d > 5*time.Second {
			t.Errorf("network %s: the refusal took %v", shutNICs[i].Network, d)
		}
		if n := host.accepted.Load(); n != 0 {
			t.Errorf("network %s: the host-only listener accepted %d connections for a guest that did not opt in", shutNICs[i].Network, n)
		}
		if got, err := udpAsk(shut, netip.AddrPortFrom(gw, echo), time.Second); err == nil {
			t.Errorf("network %s: a guest that did not opt in got %q from the host's 127.0.0.1 over UDP", shutNICs[i].Network, got)
		}

		c, err := open.dialTCP(ctx, netip.AddrPortFrom(gw, host.port()))
		if err != nil {
			t.Fatalf("network %s: a guest that opted in to the host's loopback: %v", openNICs[i].Network, err)
		}
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != "hello from the host" {
			t.Errorf("network %s: the guest that opted in read %q", openNICs[i].Network, b)
		}
		if got, err := udpAsk(open, netip.AddrPortFrom(gw, echo), 5*time.Second); err != nil || got != "echo ping" {
			t.Errorf("network %s: UDP from the guest that opted in: %q, %v", openNICs[i].Network, got, err)
		}
		host.accepted.Store(0)
	}
}

// udpAsk sends "ping" from the guest to ap and returns the answer.
func udpAsk(g *fakeGuest, ap netip.AddrPort, wait time.Duration) (string, error) {
	c, err := g.dialUDP(ap)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(wait))
	if _, err := c.Write([]byte("ping")); err != nil {
		return "", err
	}
	buf := make([]byte, 100)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// TestHostLoopbackCrafted: frames written by hand, as a hostile guest
// can, find no other way to the host's loopback: not 127.0.0.1 or
// 127.0.0.2 or 0.0.0.0 as the destination (not even for an instance that
// opted in), not the address of an instance that opted in as the source.
func TestHostLoopbackCrafted(t *testing.T) {
	m, _ := newManager(t, network.NetworkConfig{Name: "a"})
	shut := newRawNIC(t, attach(t, m, network.Endpoint{Instance: "shut-1"}, network.Attachment{Network: "a"})[0])
	open := newRawNIC(t, attach(t, m, network.Endpoint{Instance: "open-1", HostLoopback: true}, network.Attachment{Network: "a"})[0])
	victim := attach(t, m, network.Endpoint{Instance: "victim-1", HostLoopback: true}, network.Attachment{Network: "a"})[0]
	host := listenHostOnly(t, "127.0.0.1:0")
	gw, port := shut.nic.Gateway, host.port()
	loopback := netip.MustParseAddr("127.0.0.1")

	// The controls: the gateway hears hand-made frames, refuses the
	// guest that did not opt in with a reset and connects the other.
	if got := shut.syn(t, shut.ip(), gw, port); got != "reset" {
		t.Fatalf("SYN to the gateway from the guest that did not opt in: %s, want reset", got)
	}
	if got := open.syn(t, open.ip(), gw, port); got != "accepted" || !host.waitAccepted(1) {
		t.Fatalf("SYN to the gateway from the guest that opted in: %s, host accepted %d; want accepted, 1", got, host.accepted.Load())
	}
	host.accepted.Store(0)

	dsts := []netip.Addr{loopback, netip.MustParseAddr("0.0.0.0")}
	if runtime.GOOS == "linux" { // all of 127/8 is the host's loopback
		other := listenHostOnly(t, "127.0.0.2:0")
		defer func() {
			if n := other.accepted.Load(); n != 0 {
				t.Errorf("the listener on the host's 127.0.0.2 accepted %d connections from guests", n)
			}
		}()
		if got := open.syn(t, open.ip(), netip.MustParseAddr("127.0.0.2"), other.port()); got == "accepted" {
			t.Errorf("SYN to 127.0.0.2 from the guest that opted in: %s", got)
		}
		dsts = append(dsts, netip.MustParseAddr("127.1.2.3"))
	}
	for _, g := range []*rawNIC{shut, open} {
		for _, dst := range dsts {
			if got := g.syn(t, g.ip(), dst, port); got == "accepted" {
				t.Errorf("SYN to %s from %s: %s", dst, g.nic.Address, got)
			}
		}
	}
	// Passing as the instance that opted in: the frame never reaches the
	// gateway.
	if got := shut.syn(t, victim.Address.Addr(), gw, port); got == "accepted" {
		t.Errorf("SYN to the gateway from the guest that did not opt in, sent as %s: %s", victim.Address.Addr(), got)
	}
	time.Sleep(200 * time.Millisecond) // a late dial would show
	if n := host.accepted.Load(); n != 0 {
		t.Errorf("the host-only listener accepted %d connections from crafted frames", n)
	}
}

// rawNIC is a hostile guest: it writes frames by hand on a NIC's socket
// and answers ARP for its address, nothing more.
type rawNIC struct {
	nic  network.NIC
	mac  tcpip.LinkAddress
	conn net.Conn
	wmu  sync.Mutex
	tcp  chan header.TCP // segments to the NIC's address
	port atomic.Uint32   // the next source port
}

func newRawNIC(t *testing.T, nic network.NIC) *rawNIC {
	t.Helper()
	conn, err := net.Dial("unix", nic.Socket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	hw, _ := net.ParseMAC(nic.MAC)
	r := &rawNIC{nic: nic, mac: tcpip.LinkAddress(hw), conn: conn, tcp: make(chan header.TCP, 64)}
	r.port.Store(40000)
	go r.read()
	return r
}

func (r *rawNIC) ip() netip.Addr { return r.nic.Address.Addr() }

func (r *rawNIC) write(frame []byte) error {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	_, err := r.conn.Write(binary.BigEndian.AppendUint32(nil, uint32(len(frame))))
	if err == nil {
		_, err = r.conn.Write(frame)
	}
	return err
}

// read answers ARP requests for the NIC's address and queues the TCP
// segments sent to it.
func (r *rawNIC) read() {
	br := bufio.NewReader(r.conn)
	var size [4]byte
	own := tcpip.AddrFrom4(r.ip().As4())
	for {
		if _, err := io.ReadFull(br, size[:]); err != nil {
			return
		}
		frame := make([]byte, binary.BigEndian.Uint32(size[:]))
		if _, err := io.ReadFull(br, frame); err != nil || len(frame) < header.EthernetMinimumSize {
			return
		}
		payload := frame[header.EthernetMinimumSize:]
		switch header.Ethernet(frame).Type() {
		case header.ARPProtocolNumber:
			req := header.ARP(payload)
			if req.IsValid() && req.Op() == header.ARPRequest && tcpip.AddrFrom4Slice(req.ProtocolAddressTarget()) == own {
				r.write(r.arpReply(req))
			}
		case header.IPv4ProtocolNumber:
			ip := header.IPv4(payload)
			if ip.IsValid(len(payload)) && ip.TransportProtocol() == header.TCPProtocolNumber && ip.DestinationAddress() == own {
				select {
				case r.tcp <- header.TCP(ip.Payload()):
				default:
				}
			}
		}
	}
}

func (r *rawNIC) arpReply(req header.ARP) []byte {
	b := make([]byte, header.EthernetMinimumSize+header.ARPSize)
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: r.mac, DstAddr: tcpip.LinkAddress(req.HardwareAddressSender()), Type: header.ARPProtocolNumber})
	a := header.ARP(b[header.EthernetMinimumSize:])
	a.SetIPv4OverEthernet()
	a.SetOp(header.ARPReply)
	copy(a.HardwareAddressSender(), r.mac)
	copy(a.ProtocolAddressSender(), req.ProtocolAddressTarget())
	copy(a.HardwareAddressTarget(), req.HardwareAddressSender())
	copy(a.ProtocolAddressTarget(), req.ProtocolAddressSender())
	return b
}

// syn sends a TCP SYN from src to dst:port, addressed to the gateway's
// MAC, and says what came back within a second: "accepted" (SYN-ACK),
// "reset" or "nothing".
func (r *rawNIC) syn(t *testing.T, src, dst netip.Addr, port uint16) (res string) {
	defer func() { t.Logf("%s -> %s:%d: %s", src, dst, port, res) }()
	t.Helper()
	sport := uint16(r.port.Add(1))
	gwMAC, _ := net.ParseMAC(gatewayMAC)
	const ipLen = header.IPv4MinimumSize + header.TCPMinimumSize
	b := make([]byte, header.EthernetMinimumSize+ipLen)
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: r.mac, DstAddr: tcpip.LinkAddress(gwMAC), Type: header.IPv4ProtocolNumber})
	s, d := tcpip.AddrFrom4(src.As4()), tcpip.AddrFrom4(dst.As4())
	ip := header.IPv4(b[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv4Fields{TotalLength: ipLen, TTL: 64, Protocol: uint8(header.TCPProtocolNumber), SrcAddr: s, DstAddr: d})
	ip.SetChecksum(^ip.CalculateChecksum())
	seg := header.TCP(ip[header.IPv4MinimumSize:])
	seg.Encode(&header.TCPFields{SrcPort: sport, DstPort: port, SeqNum: 1, DataOffset: header.TCPMinimumSize, Flags: header.TCPFlagSyn, WindowSize: 65535})
	seg.SetChecksum(^seg.CalculateChecksum(header.PseudoHeaderChecksum(header.TCPProtocolNumber, s, d, header.TCPMinimumSize)))
	if err := r.write(b); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(time.Second)
	for {
		select {
		case seg := <-r.tcp:
			if seg.SourcePort() != port || seg.DestinationPort() != sport {
				continue
			}
			switch f := seg.Flags(); {
			case f.Contains(header.TCPFlagRst):
				return "reset"
			case f.Contains(header.TCPFlagSyn | header.TCPFlagAck):
				return "accepted"
			}
		case <-timeout:
			return "nothing"
		}
	}
}
