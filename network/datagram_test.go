//go:build linux || darwin

package network_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/vmcompose/vmcompose/network"
)

// datagramPair is a unix SOCK_DGRAM socketpair, as vz's file-handle
// attachment uses.
func datagramPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_DGRAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "dgram")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}

// TestServeDatagram: a NIC joined through a datagram socketpair gets DNS
// answers and sees guests on the socket-connected side; Detach ends it.
func TestServeDatagram(t *testing.T) {
	m, _ := newManager(t, network.NetworkConfig{Name: "default"})
	web := attach(t, m, network.Endpoint{Instance: "web-1", Service: "web"}, network.Attachment{Network: "default"})[0]
	vz := attach(t, m, network.Endpoint{Instance: "vz-1", Service: "vz"}, network.Attachment{Network: "default"})[0]
	newFakeGuest(t, web).listenTCP(t, 80)

	ours, theirs := datagramPair(t)
	done := make(chan error, 1)
	go func() { done <- m.ServeDatagram(context.Background(), "vz-1", "default", ours) }()
	g := newFakeGuestConn(t, vz, theirs, true)

	c, err := g.dialUDP(netip.AddrPortFrom(vz.DNS, 53))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := answers(query(t, c, "web", dns.TypeA)); got != web.Address.Addr().String() {
		t.Errorf("web from the datagram NIC: %s", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tc, err := g.dialTCP(ctx, netip.AddrPortFrom(web.Address.Addr(), 80))
	if err != nil {
		t.Fatalf("the datagram NIC to a stream NIC: %v", err)
	}
	tc.Close()

	other, _ := datagramPair(t)
	if err := m.ServeDatagram(context.Background(), "vz-1", "nope", other); err == nil {
		t.Error("ServeDatagram on a network the instance is not on succeeded")
	}
	m.Detach("vz-1")
	select {
	case err := <-done:
		if err == nil || errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("ServeDatagram after Detach: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("ServeDatagram did not return after Detach")
	}
}
