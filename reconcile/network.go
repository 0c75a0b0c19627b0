package reconcile

import (
	"context"
	"fmt"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/network"
	"github.com/vmcompose/vmcompose/vm"
)

// NetworkHookFor connects instances to the project's networks on m: it
// attaches the instance (DNS names, aliases, a static lease per network),
// gives the VM one NIC per network, has vminit configure them statically
// with the gateway as resolver, and publishes the service's ports.
func NetworkHookFor(m *network.Manager, p *types.Project) NetworkHook {
	return func(ctx context.Context, instance string, svc types.ServiceConfig, spec *vm.Spec, guest *agent.Spec) error {
		atts, err := network.AttachmentsOf(svc)
		if err != nil {
			return fmt.Errorf("service %q: %w", svc.Name, err)
		}
		if len(atts) == 0 {
			return nil // network_mode: none
		}
		nics, err := m.Attach(network.EndpointOf(p, svc, instance), atts)
		if err != nil {
			return fmt.Errorf("service %q: %w", svc.Name, err)
		}
		spec.Networks, guest.Networks = nil, nil
		for _, n := range nics {
			spec.Networks = append(spec.Networks, vm.Network{Socket: n.Socket, MAC: n.MAC})
			iface := agent.Interface{MAC: n.MAC, Addresses: []string{n.Address.String()}, MTU: n.MTU}
			if n.Default {
				iface.Gateway = n.Gateway.String()
			}
			guest.Networks = append(guest.Networks, iface)
		}
		if len(guest.DNS) == 0 {
			guest.DNS = []string{nics[0].DNS.String()}
			guest.DNSSearch = append(nics[0].Search, guest.DNSSearch...)
		}
		if _, err := m.Publish(instance, svc.Ports); err != nil {
			return err // names the service and the port
		}
		return nil
	}
}
