package reconcile

import (
	"context"
	"fmt"
	"log/slog"
	"sync"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/network"
	"github.com/vmcompose/vmcompose/vm"
)

// NetworkRecord is what joining an instance to the project's networks
// needs, kept in the state file so that a restarted supervisor attaches it
// again with the same addresses.
type NetworkRecord struct {
	Project     string                    `json:"project"`
	Endpoint    network.Endpoint          `json:"endpoint"`
	Attachments []network.Attachment      `json:"attachments"` // MAC and IP filled in
	Ports       []types.ServicePortConfig `json:"ports,omitempty"`
	// Networks are the project's networks with their subnets resolved.
	Networks []network.NetworkConfig `json:"networks"`
}

// Networks owns a project's virtual network in its supervisor: one
// network.Manager, made on first use. It lives as long as the supervisor;
// QEMU 7.2's stream NICs do not reconnect, so a VM that outlives its
// supervisor must be restarted to join the next one's network.
type Networks struct {
	// Dir holds the NICs' sockets.
	Dir string
	Log *slog.Logger

	mu  sync.Mutex
	ctx context.Context
	m   *network.Manager
}

// NewNetworks returns the network owner of a supervisor whose life is ctx.
func NewNetworks(ctx context.Context, dir string, log *slog.Logger) *Networks {
	return &Networks{Dir: dir, Log: log, ctx: ctx}
}

// manager returns the project's network, making it with cfgs when there is
// none yet. A network the running one lacks is an error: networks change
// with a down and an up.
func (n *Networks) manager(project string, cfgs []network.NetworkConfig) (*network.Manager, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		m, err := network.New(n.ctx, network.Config{Project: project, StateDir: n.Dir, Networks: cfgs, Logger: n.Log})
		if err != nil {
			return nil, err
		}
		n.m = m
	}
	for _, c := range cfgs {
		if _, ok := n.m.Subnet(c.Name); !ok {
			return nil, fmt.Errorf("network %q is new: run `vmcompose down` then `vmcompose up` to change the project's networks", c.Name)
		}
	}
	return n.m, nil
}

// Attach is the Supervisor's NetworkHook: it joins the instance to its
// service's networks, gives the VM one NIC per network, has vminit
// configure them statically with the gateway as resolver, and publishes
// the service's ports.
func (n *Networks) Attach(ctx context.Context, p *types.Project, instance string, svc types.ServiceConfig, spec *vm.Spec, guest *agent.Spec) (*NetworkRecord, error) {
	atts, err := network.AttachmentsOf(svc)
	if err != nil || len(atts) == 0 {
		return nil, err // none: network_mode none, host or service:
	}
	cfgs := network.NetworksOf(p)
	m, err := n.manager(p.Name, cfgs)
	if err != nil {
		return nil, err
	}
	rec := &NetworkRecord{Project: p.Name, Endpoint: network.EndpointOf(p, svc, instance), Ports: svc.Ports}
	nics, err := m.Attach(rec.Endpoint, atts)
	if err != nil {
		return nil, err
	}
	configureNICs(nics, spec, guest)
	for i := range atts {
		for _, nic := range nics {
			if nic.Network == atts[i].Network {
				atts[i].MAC, atts[i].IP = nic.MAC, nic.Address.Addr()
			}
		}
	}
	rec.Attachments = atts
	for _, c := range cfgs {
		if sub, ok := m.Subnet(c.Name); ok {
			c.Subnet = sub.String()
		}
		rec.Networks = append(rec.Networks, c)
	}
	if _, err := m.Publish(instance, svc.Ports); err != nil {
		m.Detach(instance)
		return nil, err // it names the service and the port
	}
	return rec, nil
}

// Reattach joins a recorded instance again, with its addresses, before its
// VM boots.
func (n *Networks) Reattach(ctx context.Context, instance string, rec *NetworkRecord) error {
	m, err := n.manager(rec.Project, rec.Networks)
	if err != nil {
		return err
	}
	if _, err := m.Attach(rec.Endpoint, rec.Attachments); err != nil {
		return err
	}
	_, err = m.Publish(instance, rec.Ports)
	return err
}

// Detach is the Supervisor's NetworkDetach: it frees the instance's ports
// and addresses.
func (n *Networks) Detach(instance string) error {
	n.mu.Lock()
	m := n.m
	n.mu.Unlock()
	if m == nil {
		return nil
	}
	m.Unpublish(instance)
	return m.Detach(instance)
}

// Close ends the network.
func (n *Networks) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.m == nil {
		return nil
	}
	return n.m.Close()
}

func configureNICs(nics []network.NIC, spec *vm.Spec, guest *agent.Spec) {
	spec.Networks, guest.Networks = nil, nil
	for _, nic := range nics {
		spec.Networks = append(spec.Networks, vm.Network{Socket: nic.Socket, MAC: nic.MAC})
		iface := agent.Interface{MAC: nic.MAC, Addresses: []string{nic.Address.String()}, MTU: nic.MTU}
		if nic.Default {
			iface.Gateway = nic.Gateway.String()
		}
		guest.Networks = append(guest.Networks, iface)
	}
	if len(nics) > 0 && len(guest.DNS) == 0 {
		guest.DNS = []string{nics[0].DNS.String()}
		guest.DNSSearch = append(append([]string{}, nics[0].Search...), guest.DNSSearch...)
	}
}
