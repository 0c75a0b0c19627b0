package netproc

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
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/internal/unixsock"
	"github.com/vmcompose/vmcompose/network"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/vm"
)

// Record is what joining an instance to the project's networks
// needs, kept in the state file so that a restarted supervisor attaches it
// again with the same addresses.
type Record struct {
	Project     string                    `json:"project"`
	Endpoint    network.Endpoint          `json:"endpoint"`
	Attachments []network.Attachment      `json:"attachments"` // MAC and IP filled in
	Ports       []types.ServicePortConfig `json:"ports,omitempty"`
	// Networks are the project's networks with their subnets resolved.
	Networks []network.NetworkConfig `json:"networks"`
}

// Loss is a network process that ended, killed or crashed, while
// instances were attached to it.
type Loss struct {
	Pid int `json:"pid,omitempty"`
	// Status is how it ended ("signal: killed", "exit status 2"), as its
	// parent learnt it, or why that is unknown.
	Status string    `json:"status"`
	At     time.Time `json:"at"`
	// Instances were attached to it, sorted: the NICs of their running
	// VMs were connected to it and stay dead.
	Instances []string `json:"-"`
}

// Networks is the supervisor's end of the project's network process (see
// Server), which holds the network so that VMs keep it when their
// supervisor is replaced. Networks starts the process when none answers
// and starts it again when it went away; Close leaves it running while an
// instance is attached. Its methods are safe for concurrent use.
//
// Networks remembers what it attached, and to which process: when that
// process ends without having been asked to (killed, crashed), the next
// one it starts gets every such instance attached again, with the same
// networks, addresses and published ports, before any other request
// reaches it. Watch notices the end as it happens and reports it, for the
// VMs whose NICs were connected to the dead process.
type Networks struct {
	// Dir is the project's state dir.
	Dir string
	Log *slog.Logger
	// Start starts the network process, detached, and returns once it
	// answers a ping, with the process it started: nil when it cannot
	// tell.
	Start func(ctx context.Context) (*Child, error)

	mu    sync.Mutex               // serialises starts; guards the fields below
	cur   *netProc                 // the network process last seen answering
	recs  map[string]*registration // by instance: what was attached, and to which process
	watch *watching                // while Watch runs
	http  *http.Client
}

// Child is a process that this one started, and so can learn how it ends.
type Child struct {
	Pid int
	// Exited yields os/exec's Wait error once the process ended: nil for
	// exit status 0, an *exec.ExitError otherwise.
	Exited <-chan error
}

// netProc is one network process, told from the next by pid and start
// time.
type netProc struct {
	pid     int
	started time.Time
	child   *Child // when this supervisor started it
	asked   bool   // asked to quit: its end is no loss
	waited  bool   // a goroutine waits for its end
	// restored is set once its instances were attached again to the
	// process after it, moved lists them.
	restored bool
	moved    []string
}

func (p *netProc) is(ping *Ping) bool {
	return p.pid == ping.Pid && p.started.Equal(ping.Started)
}

// registration is an instance as Networks attached it.
type registration struct {
	rec  *Record
	proc *netProc
}

type watching struct {
	ctx  context.Context
	lost func(Loss)
}

// NewNetworks returns the network client of the supervisor of the project
// whose state dir is dir; start starts the network process.
func NewNetworks(dir string, log *slog.Logger, start func(ctx context.Context) (*Child, error)) *Networks {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Networks{Dir: dir, Log: log, Start: start, recs: map[string]*registration{}, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return unixsock.Dial(ctx, dir, SocketName)
		},
		DisableKeepAlives: true,
	}}}
}

// Attach is the Supervisor's NetworkHook: it joins the instance to its
// service's networks, gives the VM one NIC per network, has vminit
// configure them statically with the gateway as resolver, and publishes
// the service's ports.
func (n *Networks) Attach(ctx context.Context, p *types.Project, instance string, svc types.ServiceConfig, spec *vm.Spec, guest *agent.Spec) (*Record, error) {
	atts, err := network.AttachmentsOf(svc)
	if err != nil || len(atts) == 0 {
		return nil, err // none: network_mode none, host or service:
	}
	ep := network.EndpointOf(p, svc, instance)
	if ep.HostLoopback, err = hostLoopback(svc); err != nil {
		return nil, err
	}
	return n.attachVM(ctx, &Record{
		Project: p.Name, Endpoint: ep, Attachments: atts,
		Ports: svc.Ports, Networks: network.NetworksOf(p),
	}, spec, guest)
}

// hostLoopback is the service's x-vm.host_loopback: whether its guests
// may reach the host's 127.0.0.1 through their gateways.
func hostLoopback(svc types.ServiceConfig) (bool, error) {
	vmcfg, err := project.VMOf(svc)
	if err != nil {
		return false, fmt.Errorf("service %q: %w", svc.Name, err)
	}
	return vmcfg.HostLoopback, nil
}

// attachVM attaches rec's instance and gives its VM the NICs, configured
// by vminit, that the network process handed out.
func (n *Networks) attachVM(ctx context.Context, rec *Record, spec *vm.Spec, guest *agent.Spec) (*Record, error) {
	var a AttachReply
	rec, err := n.attach(ctx, rec, &a)
	if err != nil {
		return nil, err
	}
	configureNICs(a.NICs, spec, guest)
	return rec, nil
}

// Reattach joins a recorded instance again, with its addresses, before its
// VM boots.
func (n *Networks) Reattach(ctx context.Context, instance string, rec *Record) error {
	r := *rec
	r.Endpoint.Instance = instance
	_, err := n.attach(ctx, &r, &AttachReply{})
	return err
}

// attach attaches rec's instance to the running network process, starting
// one when none runs, and notes it. It returns rec with the MACs and
// addresses the process gave and the networks' subnets resolved.
func (n *Networks) attach(ctx context.Context, rec *Record, a *AttachReply) (*Record, error) {
	for try := 1; ; try++ {
		proc, err := n.ensure(ctx)
		if err != nil {
			return nil, err
		}
		err = n.do(ctx, "POST", "/attach", rec, a)
		if errors.Is(err, errNetworkDown) && try < 3 {
			continue // it went away: start the next one
		}
		if err != nil {
			return nil, err
		}
		kept := withAddresses(rec, a)
		n.mu.Lock()
		if n.cur == proc {
			n.recs[rec.Endpoint.Instance] = &registration{rec: kept, proc: proc}
			n.mu.Unlock()
			return kept, nil
		}
		n.mu.Unlock()
		// It ended meanwhile and the next one runs: attach there.
		if try >= 3 {
			return nil, fmt.Errorf("network process: %w: it ended during the attach, %d times", errNetworkDown, try)
		}
	}
}

// withAddresses returns rec with the MACs and addresses of a and its
// networks' subnets resolved.
func withAddresses(rec *Record, a *AttachReply) *Record {
	r := *rec
	r.Attachments = slices.Clone(rec.Attachments)
	for i := range r.Attachments {
		for _, nic := range a.NICs {
			if nic.Network == r.Attachments[i].Network {
				r.Attachments[i].MAC, r.Attachments[i].IP = nic.MAC, nic.Address.Addr()
			}
		}
	}
	if len(a.Networks) > 0 {
		r.Networks = a.Networks
	}
	return &r
}

// Attached reports whether the network process runs and has the instance
// attached with its recorded addresses: then its running VM's NICs are
// still connected. It starts no network process.
func (n *Networks) Attached(ctx context.Context, instance string, rec *Record) (bool, error) {
	p, err := n.Ping(ctx)
	if errors.Is(err, errNetworkDown) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if p.Protocol != Protocol {
		return false, nil
	}
	n.mu.Lock()
	proc := n.seen(ctx, p, nil)
	n.mu.Unlock()
	var nics []network.NIC
	err = n.do(ctx, "GET", "/instances/"+url.PathEscape(instance), nil, &nics)
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
	if len(nics) != len(rec.Attachments) {
		return false, nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cur != proc {
		return false, nil // it ended meanwhile
	}
	r := *rec
	r.Endpoint.Instance = instance
	n.recs[instance] = &registration{rec: &r, proc: proc}
	return true, nil
}

// Detach is the Supervisor's DetachRequest: it frees the instance's ports
// and addresses. With no network process there is nothing to free.
func (n *Networks) Detach(instance string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	n.mu.Lock()
	delete(n.recs, instance)
	n.mu.Unlock()
	err := n.do(ctx, "POST", "/detach", DetachRequest{Instance: instance}, nil)
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
	var q QuitRequest
	err := n.do(ctx, "POST", "/quit", QuitRequest{IfIdle: true}, &q)
	if errors.Is(err, errNetworkDown) {
		return nil
	}
	if err == nil && q.Quitting {
		n.asked()
		n.Log.Info("network process asked to exit: no instance attached")
		// Gone when Close returns, as a command that started it
		// expects: it exits within milliseconds. (Tests serve the
		// network from their own process.)
		if q.Pid != 0 && q.Pid != os.Getpid() {
			waitPid(ctx, q.Pid)
		}
	}
	return err
}

// Release ends the network process: the supervisor calls it when no VM
// of the project runs any more.
func (n *Networks) Release() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.asked()
	err := n.do(ctx, "POST", "/quit", QuitRequest{}, &QuitRequest{})
	switch {
	case errors.Is(err, errNetworkDown):
	case err != nil:
		n.Log.Warn("ending the network process", "err", err)
	default:
		n.Log.Info("network process asked to exit: no VM runs")
	}
}

// asked notes that the network process was asked to exit: its end is no
// loss.
func (n *Networks) asked() {
	n.mu.Lock()
	if n.cur != nil {
		n.cur.asked = true
	}
	n.mu.Unlock()
}

// Ping asks the network process who it is.
func (n *Networks) Ping(ctx context.Context) (*Ping, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://network/ping", nil)
	resp, err := n.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("network process: %w", errors.Join(errNetworkDown, err))
	}
	defer resp.Body.Close()
	var p Ping
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
	var e WireError
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || e.Error == "" {
		return fmt.Errorf("network process: %s", resp.Status)
	}
	return errorCodes.Rebuild(e.Error, e.Code) // it names the service, network or port
}

// ensure makes sure a network process of this protocol answers, and
// returns it: it replaces one of another protocol and starts one when none
// runs.
func (n *Networks) ensure(ctx context.Context) (*netProc, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ensureLocked(ctx)
}

// ensureLocked is ensure with n.mu held.
func (n *Networks) ensureLocked(ctx context.Context) (*netProc, error) {
	p, err := n.Ping(ctx)
	if err == nil && p.Protocol == Protocol {
		return n.seen(ctx, p, nil), nil
	}
	if err == nil {
		n.Log.Warn("network process speaks another protocol: replacing it; its VMs boot again", "pid", p.Pid, "protocol", p.Protocol, "want", Protocol, "version", p.Version)
		var q QuitRequest
		if err := n.do(ctx, "POST", "/quit", QuitRequest{}, &q); err != nil {
			return nil, fmt.Errorf("replacing the network process of another protocol: %w", err)
		}
	}
	if n.Start == nil {
		return nil, fmt.Errorf("network process: %w", errNetworkDown)
	}
	n.Log.Info("starting the network process")
	child, err := n.Start(ctx)
	if err != nil {
		return nil, fmt.Errorf("starting the network process: %w", err)
	}
	p, err = n.Ping(ctx)
	if err != nil {
		return nil, err
	}
	if p.Protocol != Protocol {
		return nil, fmt.Errorf("network process pid %d: protocol %d, want %d", p.Pid, p.Protocol, Protocol)
	}
	if child != nil && child.Pid != p.Pid {
		child = nil // another one answers: the one started exited
	}
	return n.seen(ctx, p, child), nil
}

// seen notes the network process that answered p and returns it. A new
// one means the one seen before has ended (the lock in the state dir lets
// one run at a time): unless that one was asked to exit, the instances
// attached to it are attached to the new one. n.mu is held.
func (n *Networks) seen(ctx context.Context, p *Ping, child *Child) *netProc {
	if n.cur != nil && n.cur.is(p) {
		return n.cur
	}
	old := n.cur
	n.cur = &netProc{pid: p.Pid, started: p.Started, child: child}
	n.Log.Info("network process", "pid", p.Pid, "version", p.Version, "attached", len(p.Instances))
	n.waitFor(n.cur)
	if old != nil && !old.asked && !old.restored {
		n.restore(ctx, old)
	}
	return n.cur
}

// restore attaches the instances of the network process old, which
// ended, to the current one: the same networks, addresses and published
// ports. n.mu is held, so no other attach comes first and takes an
// address.
func (n *Networks) restore(ctx context.Context, old *netProc) {
	old.restored = true
	old.moved = n.on(old)
	for _, name := range old.moved {
		r := n.recs[name]
		if err := n.do(ctx, "POST", "/attach", r.rec, &AttachReply{}); err != nil {
			// Its VM joins again when it boots, or says why not.
			n.Log.Warn("attaching an instance to the new network process", "instance", name, "err", err)
			continue
		}
		r.proc = n.cur
	}
	if len(old.moved) > 0 {
		n.Log.Info("instances attached to the new network process again", "pid", n.cur.pid, "instances", old.moved)
	}
}

// on returns the instances attached to proc, sorted. n.mu is held.
func (n *Networks) on(proc *netProc) []string {
	var names []string
	for name, r := range n.recs {
		if r.proc == proc {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// Watch watches the network process until ctx ends: each time the one in
// use ends without having been asked to, while instances were attached to
// it, it starts another with those instances attached again and calls
// lost. Their VMs' NICs were connected to the dead process, and QEMU does
// not reconnect them. Call it once.
func (n *Networks) Watch(ctx context.Context, lost func(Loss)) {
	n.mu.Lock()
	n.watch = &watching{ctx: ctx, lost: lost}
	if p, err := n.Ping(ctx); err == nil && p.Protocol == Protocol {
		n.seen(ctx, p, nil)
	}
	if n.cur != nil {
		n.waitFor(n.cur)
	}
	n.mu.Unlock()
	<-ctx.Done()
	n.mu.Lock()
	n.watch = nil
	n.mu.Unlock()
}

// waitFor waits, while Watch runs, for proc to end. n.mu is held.
func (n *Networks) waitFor(proc *netProc) {
	if n.watch == nil || proc.waited {
		return
	}
	proc.waited = true
	go n.ended(n.watch, proc)
}

// ended waits for proc to end and, unless it was asked to, restores its
// instances on a new network process and reports the loss.
func (n *Networks) ended(w *watching, proc *netProc) {
	status, err := waitProcess(w.ctx, proc)
	if err != nil {
		if w.ctx.Err() == nil {
			n.Log.Warn("cannot watch the network process: a loss of it goes unnoticed until the next attach", "pid", proc.pid, "err", err)
		}
		return
	}
	n.mu.Lock()
	if proc.asked {
		n.mu.Unlock()
		n.Log.Info("network process exited as asked", "pid", proc.pid, "status", status)
		return
	}
	names := proc.moved
	if !proc.restored {
		names = n.on(proc)
	}
	if len(names) == 0 {
		n.mu.Unlock()
		n.Log.Info("the project's network process ended, with no instance attached", "project", filepath.Base(n.Dir), "pid", proc.pid, "status", status)
		return
	}
	n.Log.Error("the project's network process died", "project", filepath.Base(n.Dir), "pid", proc.pid, "status", status, "attached", names)
	if n.cur == proc {
		// Nothing replaced it yet: start the next one now, so that
		// published ports and names answer as soon as the VMs are back.
		if _, err := n.ensureLocked(w.ctx); err != nil {
			n.Log.Error("starting the network process again", "err", err)
		}
	}
	n.mu.Unlock()
	w.lost(Loss{Pid: proc.pid, Status: status, At: time.Now(), Instances: names})
}

// waitProcess returns once proc has ended, with how it did when this
// process is its parent.
func waitProcess(ctx context.Context, proc *netProc) (string, error) {
	if proc.child != nil {
		select {
		case err := <-proc.child.Exited:
			var ee *exec.ExitError
			switch {
			case err == nil:
				return "exit status 0", nil
			case errors.As(err, &ee):
				return ee.ProcessState.String(), nil
			}
			return err.Error(), nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	if err := waitPid(ctx, proc.pid); err != nil {
		return "", err
	}
	return "unknown (an earlier supervisor started it: only a parent learns how a process ended)", nil
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
