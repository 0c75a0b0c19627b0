package netproc

import (
	"context"
	"net/netip"
	"slices"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/network"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/vm"
)

// OneOff is how a one-off VM (`vmcompose run`) joins its service's
// networks.
type OneOff struct {
	// Ports are published for it: none unless --service-ports or -p.
	Ports []types.ServicePortConfig
	// Aliases (--use-aliases) makes the service's name and its network
	// aliases resolve to it too, as they do to the service's instances.
	Aliases bool
	// Driver, when set, has the attach first detach the one-off VMs that
	// ended without detaching (see DetachEnded).
	Driver vm.Driver
}

// AttachOneOff joins a one-off VM of svc to the service's networks, the
// way docker compose run's container joins them: it reaches the other
// services by name and answers to its own names (instance and
// "<project>-<instance>"), not the service's (unless o.Aliases); its
// addresses and MACs come from the pool, since the service's ipv4_address
// and mac_address belong to its instances. It gives the VM its NICs and
// publishes o.Ports. The record is nil when the service joins no network;
// Detach undoes the rest.
func (n *Networks) AttachOneOff(ctx context.Context, p *types.Project, instance string, svc types.ServiceConfig, o OneOff, spec *vm.Spec, guest *agent.Spec) (*Record, error) {
	atts, err := network.AttachmentsOf(svc)
	if err != nil || len(atts) == 0 {
		return nil, err
	}
	if o.Driver != nil {
		n.DetachEnded(ctx, o.Driver)
	}
	ep := network.Endpoint{Instance: instance, Names: []string{p.Name + "-" + instance}}
	if ep.HostLoopback, err = hostLoopback(svc); err != nil {
		return nil, err
	}
	if o.Aliases {
		ep.Service = svc.Name
	}
	for i := range atts {
		atts[i].MAC, atts[i].IP = "", netip.Addr{}
		if !o.Aliases {
			atts[i].Aliases = nil
		}
	}
	return n.attachVM(ctx, &Record{Project: p.Name, Endpoint: ep, Attachments: atts, Ports: o.Ports, Networks: network.NetworksOf(p)}, spec, guest)
}

// DetachEnded detaches the one-off VMs whose run ended without detaching
// them (its vmcompose was killed): their VM was started and runs no more,
// yet they hold addresses and published ports. Instances are the
// supervisor's; a one-off VM not started yet is left alone, as it may be
// another run's, about to boot. It starts no network process.
func (n *Networks) DetachEnded(ctx context.Context, d vm.Driver) {
	p, err := n.Ping(ctx)
	if err != nil {
		return
	}
	for _, name := range p.Instances {
		if _, _, ok := planner.ParseInstance(name); ok {
			continue
		}
		st, err := d.Inspect(ctx, name)
		if err != nil || st.State == vm.StateRunning || st.StartedAt.IsZero() {
			continue
		}
		if err := n.Detach(name); err != nil {
			n.Log.Warn("detaching an ended one-off VM", "vm", name, "err", err)
		}
	}
}

// Keeps reports whether the network process that answered p, before a
// VM of instance started, still runs with the instance attached: then the
// VM's NICs are connected. (Attached also says yes for a network process
// that replaced a dead one and attached the instance again, but QEMU does
// not reconnect a NIC.) It starts no network process.
func (n *Networks) Keeps(ctx context.Context, p *Ping, instance string) bool {
	now, err := n.Ping(ctx)
	return err == nil && p != nil && now.Pid == p.Pid && now.Started.Equal(p.Started) && slices.Contains(now.Instances, instance)
}
