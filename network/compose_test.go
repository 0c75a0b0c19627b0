package network_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/network"
)

func TestNetworksOf(t *testing.T) {
	p := &types.Project{Name: "proj", Networks: types.Networks{
		"default": {},
		"back":    {Internal: true, Ipam: types.IPAMConfig{Config: []*types.IPAMPool{{Subnet: "fd00::/64"}, {Subnet: "10.90.0.0/24"}}}},
		"front":   {Ipam: types.IPAMConfig{Config: []*types.IPAMPool{{Subnet: "172.28.0.0/16", Gateway: "172.28.5.254"}}}},
	}}
	got := fmt.Sprint(network.NetworksOf(p))
	want := "[{back 10.90.0.0/24  true} {default   false} {front 172.28.0.0/16 172.28.5.254 false}]"
	if got != want {
		t.Errorf("NetworksOf: %s, want %s", got, want)
	}
}

func TestAttachmentsOf(t *testing.T) {
	svc := types.ServiceConfig{Name: "web", ContainerSpec: types.ContainerSpec{MacAddress: "02:00:00:00:00:01", Networks: map[string]*types.ServiceNetworkConfig{
		"b":     {Aliases: []string{"x"}, Ipv4Address: "10.90.0.9"},
		"a":     nil,
		"first": {GatewayPriority: 10, MacAddress: "02:00:00:00:00:02"},
	}}}
	got, err := network.AttachmentsOf(svc)
	if err != nil {
		t.Fatal(err)
	}
	want := []network.Attachment{
		{Network: "first", MAC: "02:00:00:00:00:02"},
		{Network: "a"},
		{Network: "b", Aliases: []string{"x"}, IP: netip.MustParseAddr("10.90.0.9")},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("AttachmentsOf: %+v, want %+v", got, want)
	}
	got, _ = network.AttachmentsOf(types.ServiceConfig{Name: "db", ContainerSpec: types.ContainerSpec{MacAddress: "02:00:00:00:00:03"}})
	if fmt.Sprint(got) != fmt.Sprint([]network.Attachment{{Network: "default", MAC: "02:00:00:00:00:03"}}) {
		t.Errorf("AttachmentsOf a service without networks: %+v", got)
	}
	if got, err := network.AttachmentsOf(types.ServiceConfig{Name: "db", ContainerSpec: types.ContainerSpec{NetworkMode: "none"}}); err != nil || len(got) != 0 {
		t.Errorf("AttachmentsOf a service with network_mode none: %+v, %v; want none", got, err)
	}
	if _, err := network.AttachmentsOf(types.ServiceConfig{Name: "db", ContainerSpec: types.ContainerSpec{NetworkMode: "host"}}); err == nil || !strings.Contains(err.Error(), `network_mode "host" is not supported`) {
		t.Errorf("AttachmentsOf a service with network_mode host: %v", err)
	}
	_, err = network.AttachmentsOf(types.ServiceConfig{Name: "db", ContainerSpec: types.ContainerSpec{Networks: map[string]*types.ServiceNetworkConfig{"a": {Ipv4Address: "fd00::1"}}}})
	if err == nil || err.Error() != `service "db": network "a": ipv4_address "fd00::1" is not an IPv4 address` {
		t.Errorf("AttachmentsOf with an IPv6 ipv4_address: %v", err)
	}
}

func TestEndpointOf(t *testing.T) {
	ep := network.EndpointOf(&types.Project{Name: "proj"}, types.ServiceConfig{Name: "web", ContainerName: "webby", ContainerSpec: types.ContainerSpec{Hostname: "www1"}}, "web-2")
	want := network.Endpoint{Instance: "web-2", Service: "web", Names: []string{"webby", "www1", "proj-web-2"}}
	if fmt.Sprint(ep) != fmt.Sprint(want) {
		t.Errorf("EndpointOf: %+v, want %+v", ep, want)
	}
}
