package reconcile

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

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

// Networks is the supervisor's end of the project's network process (see
// NetworkServer), which holds the network so that VMs keep it when their
// supervisor is replaced. Networks starts the process when none answers
// and starts it again when it went away; Close leaves it running while an
// instance is attached. Its methods are safe for concurrent use.
type Networks struct {
	// Dir is the project's state dir.
	Dir string
	Log *slog.Logger
	// Start starts the network process, detached, and returns once it
	// answers a ping.
	Start func(ctx context.Context) error

	mu   sync.Mutex // serialises starts
	pid  int        // of the network process last seen
	http *http.Client
}

// NewNetworks returns the network client of the supervisor of the project
// whose state dir is dir; start starts the network process.
func NewNetworks(dir string, log *slog.Logger, start func(ctx context.Context) error) *Networks {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Networks{Dir: dir, Log: log, Start: start, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialUnix(ctx, dir, NetworkSocketName)
		},
		DisableKeepAlives: true,
	}}}
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
	rec := &NetworkRecord{
		Project: p.Name, Endpoint: network.EndpointOf(p, svc, instance), Attachments: atts,
		Ports: svc.Ports, Networks: network.NetworksOf(p),
	}
	var a NetworkAttachment
	if err := n.call(ctx, "POST", "/attach", rec, &a, true); err != nil {
		return nil, err
	}
	configureNICs(a.NICs, spec, guest)
	for i := range atts {
		for _, nic := range a.NICs {
			if nic.Network == atts[i].Network {
				atts[i].MAC, atts[i].IP = nic.MAC, nic.Address.Addr()
			}
		}
	}
	rec.Attachments, rec.Networks = atts, a.Networks
	return rec, nil
}

// Reattach joins a recorded instance again, with its addresses, before its
// VM boots.
func (n *Networks) Reattach(ctx context.Context, instance string, rec *NetworkRecord) error {
	r := *rec
	r.Endpoint.Instance = instance
	return n.call(ctx, "POST", "/attach", &r, &NetworkAttachment{}, true)
}

// Attached reports whether the network process runs and has the instance
// attached with its recorded addresses: then its running VM's NICs are
// still connected. It starts no network process.
func (n *Networks) Attached(ctx context.Context, instance string, rec *NetworkRecord) (bool, error) {
	var nics []network.NIC
	err := n.call(ctx, "GET", "/instances/"+url.PathEscape(instance), nil, &nics, false)
	if errors.Is(err, errNetworkDown) || errors.Is(err, errNotAttached) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for _, a := range rec.Attachments {
		if !slices.ContainsFunc(nics, func(nic network.NIC) bool {
			return nic.Network == a.Network && strings.EqualFold(nic.MAC, a.MAC) && nic.Address.Addr() == a.IP
		}) {
			return false, nil
		}
	}
	return len(nics) == len(rec.Attachments), nil
}

// Detach is the Supervisor's NetworkDetach: it frees the instance's ports
// and addresses. With no network process there is nothing to free.
func (n *Networks) Detach(instance string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := n.call(ctx, "POST", "/detach", NetworkDetach{Instance: instance}, nil, false)
	if errors.Is(err, errNetworkDown) {
		return nil
	}
	return err
}

// Close ends the supervisor's use of the network. The network process
// keeps running for the VMs that are attached; with none (after a down)
// it is asked to exit. See also Release.
func (n *Networks) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var q NetworkQuit
	err := n.call(ctx, "POST", "/quit", NetworkQuit{IfIdle: true}, &q, false)
	if errors.Is(err, errNetworkDown) {
		return nil
	}
	if err == nil && q.Quitting {
		n.Log.Info("network process asked to exit: no instance attached")
	}
	return err
}

// Release ends the network process: the supervisor calls it when no VM
// of the project runs any more.
func (n *Networks) Release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := n.call(ctx, "POST", "/quit", NetworkQuit{}, &NetworkQuit{}, false)
	switch {
	case errors.Is(err, errNetworkDown):
	case err != nil:
		n.Log.Warn("ending the network process", "err", err)
	default:
		n.Log.Info("network process asked to exit: no VM runs")
	}
}

// Ping asks the network process who it is.
func (n *Networks) Ping(ctx context.Context) (*NetworkPing, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://network/ping", nil)
	resp, err := n.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("network process: %w", errors.Join(errNetworkDown, err))
	}
	defer resp.Body.Close()
	var p NetworkPing
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		return nil, fmt.Errorf("network process ping: %w", err)
	}
	return &p, nil
}

var (
	// errNetworkDown: no network process answers (or it is exiting).
	errNetworkDown = errors.New("no network process runs")
	// errNotAttached: the network process does not know the instance.
	errNotAttached = errors.New("not attached")
)

// call sends a request to the network process and decodes its answer into
// out. When start is set, a network process that does not answer, is
// exiting or speaks another protocol is (re)started and asked again.
func (n *Networks) call(ctx context.Context, method, path string, in, out any, start bool) error {
	if start {
		if err := n.ensure(ctx); err != nil {
			return err
		}
	}
	err := n.do(ctx, method, path, in, out)
	if start && errors.Is(err, errNetworkDown) {
		if err := n.ensure(ctx); err != nil {
			return err
		}
		err = n.do(ctx, method, path, in, out)
	}
	return err
}

func (n *Networks) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://network"+path, body)
	if err != nil {
		return err
	}
	resp, err := n.http.Do(req)
	if err != nil {
		return fmt.Errorf("network process: %w", errors.Join(errNetworkDown, err))
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		if out == nil {
			return nil
		}
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("network process answer: %w", err)
		}
		return nil
	case http.StatusServiceUnavailable:
		return fmt.Errorf("network process: %w", errNetworkDown)
	case http.StatusNotFound:
		return errNotAttached
	}
	var e NetworkError
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error == "" {
		return fmt.Errorf("network process: %s", resp.Status)
	}
	return errors.New(e.Error) // it names the service, network or port
}

// ensure makes sure a network process of this protocol answers: it
// replaces one of another protocol and starts one when none runs.
func (n *Networks) ensure(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	p, err := n.Ping(ctx)
	if err == nil && p.Protocol == NetworkProtocol {
		n.seen(p)
		return nil
	}
	if err == nil {
		n.Log.Warn("network process speaks another protocol: replacing it; its VMs boot again", "pid", p.Pid, "protocol", p.Protocol, "want", NetworkProtocol, "version", p.Version)
		var q NetworkQuit
		if err := n.do(ctx, "POST", "/quit", NetworkQuit{}, &q); err != nil {
			return fmt.Errorf("replacing the network process of another protocol: %w", err)
		}
	}
	if n.Start == nil {
		return fmt.Errorf("network process: %w", errNetworkDown)
	}
	n.Log.Info("starting the network process")
	if err := n.Start(ctx); err != nil {
		return fmt.Errorf("starting the network process: %w", err)
	}
	p, err = n.Ping(ctx)
	if err != nil {
		return err
	}
	if p.Protocol != NetworkProtocol {
		return fmt.Errorf("network process pid %d: protocol %d, want %d", p.Pid, p.Protocol, NetworkProtocol)
	}
	n.seen(p)
	return nil
}

// seen notes the network process's pid, and says when it is a new one.
// n.mu is held.
func (n *Networks) seen(p *NetworkPing) {
	if p.Pid != n.pid {
		n.Log.Info("network process", "pid", p.Pid, "version", p.Version, "attached", len(p.Instances))
		n.pid = p.Pid
	}
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
