package network_test

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/vmcompose/vmcompose/network"
)

// arpRequest is an Ethernet frame asking who has ip, from mac/from.
func arpRequest(mac net.HardwareAddr, from, ip netip.Addr) []byte {
	f := make([]byte, 42)
	copy(f[0:6], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:12], mac)
	binary.BigEndian.PutUint16(f[12:], 0x0806)
	binary.BigEndian.PutUint16(f[14:], 1)      // Ethernet
	binary.BigEndian.PutUint16(f[16:], 0x0800) // IPv4
	f[18], f[19] = 6, 4
	binary.BigEndian.PutUint16(f[20:], 1) // request
	copy(f[22:28], mac)
	a, b := from.As4(), ip.As4()
	copy(f[28:32], a[:])
	copy(f[38:42], b[:])
	return f
}

// TestStalledGuest: a guest that stops reading its socket (a paused VM)
// does not stall the segment for the others.
func TestStalledGuest(t *testing.T) {
	m, _ := newManager(t, network.NetworkConfig{Name: "default"})
	stalled := attach(t, m, network.Endpoint{Instance: "s-1"}, network.Attachment{Network: "default"})[0]
	conn, err := net.Dial("unix", stalled.Socket)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mac, _ := net.ParseMAC(stalled.MAC)
	frame := arpRequest(mac, stalled.Address.Addr(), stalled.Gateway)
	msg := make([]byte, 4+len(frame))
	binary.BigEndian.PutUint32(msg, uint32(len(frame)))
	copy(msg[4:], frame)
	var burst []byte
	for range 1000 {
		burst = append(burst, msg...)
	}
	// Each request gets a reply the stalled guest never reads: enough to
	// fill its socket buffer many times over.
	// Its own requests back up once the switch blocks on it: that is
	// its business; write for a while, then go on.
	conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	for range 50 {
		if _, err := conn.Write(burst); err != nil {
			break
		}
	}
	// The flood fills the gateway's queue too, so a query may be dropped
	// (frames are dropped, not queued, when a queue is full): ask again as
	// a resolver would, each time within a second.
	c := dnsConn(t, m, "default")
	msgq := new(dns.Msg)
	msgq.SetQuestion("s-1.", dns.TypeA)
	dc := &dns.Conn{Conn: c}
	var r *dns.Msg
	for try := range 5 {
		c.SetDeadline(time.Now().Add(time.Second))
		if err = dc.WriteMsg(msgq); err == nil {
			r, err = dc.ReadMsg()
		}
		if err == nil {
			break
		}
		t.Logf("query %d: %v", try+1, err)
	}
	if err != nil {
		t.Fatalf("DNS for another guest while one is stalled: %v", err)
	}
	if got := answers(r); got != stalled.Address.Addr().String() {
		t.Errorf("s-1: %s", got)
	}
}
