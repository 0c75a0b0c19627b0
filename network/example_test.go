package network_test

import (
	"context"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/network"
)

// The supervisor's part: one Manager per project, attach each instance
// before its VM starts, publish its ports, detach it once its VM is gone.
func Example() {
	ctx := context.Background()
	var project *types.Project // loaded by project.Load
	stateDir := "/run/user/1000/vmcompose/proj"

	m, err := network.New(ctx, network.Config{
		Project:  project.Name,
		StateDir: filepath.Join(stateDir, "net"),
		Networks: network.NetworksOf(project),
	})
	if err != nil {
		return
	}
	defer m.Close()

	svc := project.Services["web"]
	atts, err := network.AttachmentsOf(svc)
	if err != nil {
		return
	}
	nics, err := m.Attach(network.EndpointOf(project, svc, "web-1"), atts)
	if err != nil {
		return
	}
	for _, n := range nics {
		_ = n.Socket // vm.Network{Socket: n.Socket, MAC: n.MAC}
		// agent.Interface{MAC: n.MAC, Addresses: []string{n.Address.String()},
		// MTU: n.MTU, Gateway: n.Gateway.String() if n.Default}
	}
	// agent.Spec.DNS = []string{nics[0].DNS.String()}; DNSSearch = nics[0].Search
	// ... create and start the VM ...
	if _, err := m.Publish("web-1", svc.Ports); err != nil {
		return // names the service and the port; errors.Is(err, network.ErrPortInUse)
	}
	// ... when the VM is removed:
	m.Detach("web-1")
}
