package network

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

func TestAllocateSubnetsAvoidsHost(t *testing.T) {
	host := []netip.Prefix{netip.MustParsePrefix("10.89.0.128/25"), netip.MustParsePrefix("10.89.2.0/23")}
	got, err := allocateSubnets([]NetworkConfig{{Name: "a"}, {Name: "b"}, {Name: "c"}}, host)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != "[10.89.1.0/24 10.89.4.0/24 10.89.5.0/24]" {
		t.Errorf("subnets %v", got)
	}
}

func TestDHCPReply(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "vmc-net-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	m, err := New(context.Background(), Config{Project: "p", StateDir: dir, Networks: []NetworkConfig{{Name: "a"}, {Name: "in", Internal: true}}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	nics, err := m.Attach(Endpoint{Instance: "x-1"}, []Attachment{{Network: "a"}, {Network: "in"}})
	if err != nil {
		t.Fatal(err)
	}
	msg := func(mac string, typ dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
		hw, _ := net.ParseMAC(mac)
		d, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(hw), dhcpv4.WithMessageType(typ)}, mods...)...)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	a, in := m.byName["a"], m.byName["in"]
	r := a.dhcpReply(msg(nics[0].MAC, dhcpv4.MessageTypeDiscover))
	if r == nil || r.MessageType() != dhcpv4.MessageTypeOffer || r.YourIPAddr.String() != "10.89.0.2" ||
		fmt.Sprint(r.Router()) != "[10.89.0.1]" || fmt.Sprint(r.DNS()) != "[10.89.0.1]" || r.DomainSearch().Labels[0] != "p.internal" {
		t.Errorf("offer: %v", r)
	}
	r = a.dhcpReply(msg(nics[0].MAC, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.89.0.2")))))
	if r == nil || r.MessageType() != dhcpv4.MessageTypeAck {
		t.Errorf("request for the lease: %v", r)
	}
	r = a.dhcpReply(msg(nics[0].MAC, dhcpv4.MessageTypeRequest, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP("10.89.0.9")))))
	if r == nil || r.MessageType() != dhcpv4.MessageTypeNak {
		t.Errorf("request for another address: %v", r)
	}
	if r := a.dhcpReply(msg("02:00:00:00:00:01", dhcpv4.MessageTypeDiscover)); r != nil {
		t.Errorf("a MAC without a lease got %v", r)
	}
	if r := a.dhcpReply(msg(nics[1].MAC, dhcpv4.MessageTypeDiscover)); r != nil {
		t.Errorf("the MAC of another network's NIC got %v", r)
	}
	r = in.dhcpReply(msg(nics[1].MAC, dhcpv4.MessageTypeDiscover))
	if r == nil || r.YourIPAddr.String() != "10.89.1.2" || len(r.Router()) != 0 {
		t.Errorf("offer on an internal network (no router): %v", r)
	}
}
