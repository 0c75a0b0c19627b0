package network

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// Errors callers can test for with errors.Is.
var (
	// ErrClosed: the Manager was closed.
	ErrClosed = errors.New("network closed")
	// ErrPortInUse: a published port's host address is already taken.
	ErrPortInUse = errors.New("port is already in use")
	// ErrUnknownNetwork: an attachment names a network the project lacks.
	ErrUnknownNetwork = errors.New("no such network")
)

// DefaultMTU is every segment's MTU.
const DefaultMTU = 1500

// maxSocketPath is the longest unix socket path Linux accepts (sun_path is
// 108 bytes with the terminating NUL); macOS allows 104.
const maxSocketPath = 103

// Config is a project's networks.
type Config struct {
	// Project is the compose project's name; it seeds MAC addresses and the
	// default search domain.
	Project string
	// StateDir holds the NICs' unix sockets. Socket names are short
	// ("n0-525400a1b2c3.sock"), but StateDir must leave room for them
	// within the 103 bytes a socket path may have.
	StateDir string
	// Networks are the segments, in the order subnets are allocated.
	Networks []NetworkConfig
	// Domain is the DNS search domain every NIC gets; names are answered
	// bare and under it. Empty means "<project>.internal".
	Domain string
	// Resolver answers names outside the project for non-internal
	// networks; nil means net.DefaultResolver (the host's resolv.conf).
	Resolver Resolver
	// Logger gets debug lines; nil discards them.
	Logger *slog.Logger
}

// NetworkConfig is one compose network.
type NetworkConfig struct {
	// Name is the network's key in the compose file ("default", "back").
	Name string
	// Subnet is ipam.config[0].subnet ("10.90.0.0/24"); empty allocates
	// the next free 10.89.N.0/24.
	Subnet string
	// Gateway is ipam.config[0].gateway; empty means the subnet's first
	// host address.
	Gateway string
	// Internal is compose's `internal: true`: no outbound traffic, no
	// host loopback through the gateway, no names from outside.
	Internal bool
}

// Resolver looks up names outside the project. *net.Resolver is one;
// a Resolver that also has *net.Resolver's LookupTXT, LookupMX or
// LookupSRV answers those record types too.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Endpoint is what attaches: one instance (replica) of a service.
type Endpoint struct {
	// Instance names the VM, e.g. "web-1"; unique in the project. It is a
	// DNS name on each of its networks.
	Instance string
	// Service is the compose service; its name resolves to the addresses
	// of all its attached instances on a network.
	Service string
	// Names are more DNS names on every network of the instance:
	// container_name, hostname, "<project>-web-1".
	Names []string
	// HostLoopback lets the instance reach the host's 127.0.0.1 through
	// its gateways' addresses (x-vm.host_loopback). Without it those
	// connections are refused: an image is untrusted code, and services
	// bound to the host's loopback trust whoever can connect.
	HostLoopback bool `json:",omitempty"`
}

// Attachment is the instance's membership of one network (compose's
// services.<name>.networks.<network>).
type Attachment struct {
	Network string
	// Aliases are DNS names on this network only.
	Aliases []string
	// MAC is compose's mac_address; empty derives a stable one.
	MAC string
	// IP is compose's ipv4_address; invalid (zero) takes the lowest free
	// address of the subnet.
	IP netip.Addr
}

// NIC is one network interface of an instance: what the VM backend needs
// (Socket, MAC) and what the guest configures statically (the rest). The
// same values come from the segment's DHCP server.
type NIC struct {
	Network string `json:"network"`
	// Socket is the unix stream socket the VM's NIC connects to.
	Socket string `json:"socket"`
	// MAC is the NIC's hardware address ("52:54:00:a1:b2:c3").
	MAC string `json:"mac"`
	// Address is the NIC's IPv4 address with the subnet's prefix length
	// ("10.89.0.2/24").
	Address netip.Prefix `json:"address"`
	// Gateway is the segment's gateway; DNS is served there too.
	Gateway netip.Addr `json:"gateway"`
	DNS     netip.Addr `json:"dns"`
	// Search is the DNS search domain list.
	Search []string `json:"search,omitempty"`
	MTU    int      `json:"mtu"`
	// Default marks the NIC that carries the default route: the first
	// non-internal one. An instance only on internal networks has none.
	Default bool `json:"default,omitempty"`
}

// Manager is a project's virtual network. Its methods are safe for
// concurrent use.
type Manager struct {
	cfg    Config
	domain string
	log    *slog.Logger
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.RWMutex
	closed    bool
	segments  []*segment
	subnets   []netip.Prefix // every segment's, set before the first starts
	byName    map[string]*segment
	instances map[string]*instance
	order     []string // instance names in attach order, for stable DNS answers
}

// instance is an attached Endpoint.
type instance struct {
	ep    Endpoint
	nics  []*attached
	ports []*binding
}

// attached is one NIC of an instance on a segment.
type attached struct {
	NIC
	seg     *segment
	aliases []string
	ln      net.Listener

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// New creates the project's segments. Nothing listens until Attach. When
// ctx is cancelled the Manager closes, as Close does.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	if cfg.Project == "" {
		return nil, errors.New("network: no project name")
	}
	if cfg.StateDir == "" {
		return nil, errors.New("network: no state directory")
	}
	seen := map[string]bool{}
	for _, n := range cfg.Networks {
		if n.Name == "" {
			return nil, errors.New("network: a network has no name")
		}
		if seen[n.Name] {
			return nil, fmt.Errorf("network %q: listed twice", n.Name)
		}
		seen[n.Name] = true
	}
	subnets, err := allocateSubnets(cfg.Networks, hostSubnets())
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("network state directory: %w", err)
	}
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	domain := strings.Trim(strings.ToLower(cfg.Domain), ".")
	if domain == "" {
		domain = strings.ToLower(cfg.Project) + ".internal"
	}
	m := &Manager{
		cfg:       cfg,
		domain:    domain,
		log:       log,
		byName:    map[string]*segment{},
		instances: map[string]*instance{},
		subnets:   subnets,
	}
	m.ctx, m.cancel = context.WithCancel(context.WithoutCancel(ctx))
	for i, n := range cfg.Networks {
		s, err := newSegment(m, i, n, subnets[i])
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("network %q: %w", n.Name, err)
		}
		m.segments = append(m.segments, s)
		m.byName[n.Name] = s
		log.Debug("network segment", "network", n.Name, "subnet", s.prefix, "gateway", s.gateway)
	}
	go func() {
		select {
		case <-ctx.Done():
			m.Close()
		case <-m.ctx.Done():
		}
	}()
	return m, nil
}

// Subnet returns the subnet a network got.
func (m *Manager) Subnet(network string) (netip.Prefix, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	s, ok := m.byName[network]
	if !ok {
		return netip.Prefix{}, false
	}
	return s.prefix, true
}

// Domain is the search domain the NICs get.
func (m *Manager) Domain() string { return m.domain }

// Attach joins an instance to its networks and returns its NICs, in the
// order of nets: listening sockets exist when it returns, so the VM can be
// started (QEMU connects once, at start). Each NIC's address is a static
// DHCP lease by its MAC and its names are in the segments' DNS.
//
// Attach is idempotent: for an instance already attached to the same
// networks it updates names and aliases and returns the same NICs. An
// instance attached to other networks must be detached first.
func (m *Manager) Attach(ep Endpoint, nets []Attachment) ([]NIC, error) {
	if ep.Instance == "" {
		return nil, errors.New("attaching: no instance name")
	}
	if len(nets) == 0 {
		return nil, fmt.Errorf("instance %q: attaching to no network", ep.Instance)
	}
	who := ep.Service
	if who == "" {
		who = ep.Instance
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	var segs []*segment
	for _, a := range nets {
		s, ok := m.byName[a.Network]
		if !ok {
			return nil, fmt.Errorf("service %q: network %q: %w (the project has %s)", who, a.Network, ErrUnknownNetwork, m.networkNames())
		}
		if slices.Contains(segs, s) {
			return nil, fmt.Errorf("service %q: network %q listed twice", who, a.Network)
		}
		segs = append(segs, s)
	}
	if in, ok := m.instances[ep.Instance]; ok {
		if !sameSegments(in.nics, segs) {
			return nil, fmt.Errorf("instance %q: attached to other networks: detach it first", ep.Instance)
		}
		for i, a := range nets {
			n := in.nics[i]
			if a.MAC != "" && !strings.EqualFold(a.MAC, n.MAC) || a.IP.IsValid() && a.IP != n.Address.Addr() {
				return nil, fmt.Errorf("instance %q: network %q: attached with %s and %s: detach it first to change them", ep.Instance, a.Network, n.MAC, n.Address.Addr())
			}
		}
		in.ep = ep
		in.ep.Names = lowerAll(ep.Names)
		for i, a := range nets {
			in.nics[i].aliases = lowerAll(a.Aliases)
		}
		return in.list(), nil
	}
	in := &instance{ep: ep}
	in.ep.Names = lowerAll(ep.Names)
	var err error
	hasDefault := false
	for i, a := range nets {
		var n *attached
		n, err = m.attachOne(ep, who, segs[i], a)
		if err != nil {
			break
		}
		if !hasDefault && !segs[i].internal {
			n.Default = true
			hasDefault = true
		}
		in.nics = append(in.nics, n)
	}
	if err != nil {
		for _, n := range in.nics {
			n.close()
		}
		return nil, err
	}
	m.instances[ep.Instance] = in
	m.order = append(m.order, ep.Instance)
	m.log.Debug("attached", "instance", ep.Instance, "nics", in.list())
	return in.list(), nil
}

func (m *Manager) networkNames() string {
	var names []string
	for _, s := range m.segments {
		names = append(names, fmt.Sprintf("%q", s.name))
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func sameSegments(nics []*attached, segs []*segment) bool {
	if len(nics) != len(segs) {
		return false
	}
	for i, n := range nics {
		if n.seg != segs[i] {
			return false
		}
	}
	return true
}

func lowerAll(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		n = strings.Trim(strings.ToLower(n), ".")
		if n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// attachOne picks the MAC and address, reserves the lease and listens on
// the NIC's socket. m.mu is held.
func (m *Manager) attachOne(ep Endpoint, who string, s *segment, a Attachment) (*attached, error) {
	mac := strings.ToLower(a.MAC)
	if mac != "" {
		hw, err := net.ParseMAC(mac)
		if err != nil || len(hw) != 6 {
			return nil, fmt.Errorf("service %q: network %q: mac_address %q: not a MAC address such as 52:54:00:12:34:56", who, s.name, a.MAC)
		}
		mac = hw.String()
		if s.macTaken(mac) {
			return nil, fmt.Errorf("service %q: network %q: mac_address %s is taken by another instance", who, s.name, mac)
		}
	} else {
		for try := 0; ; try++ {
			mac = macFor(m.cfg.Project, ep.Instance, s.name, try)
			if !s.macTaken(mac) {
				break
			}
		}
	}
	ip := a.IP
	if ip.IsValid() {
		if err := s.usable(ip); err != nil {
			return nil, fmt.Errorf("service %q: network %q: ipv4_address %s: %w", who, s.name, ip, err)
		}
	} else {
		var ok bool
		if ip, ok = s.free(); !ok {
			return nil, fmt.Errorf("service %q: network %q: no free address left in %s", who, s.name, s.prefix)
		}
	}
	sock := filepath.Join(m.cfg.StateDir, fmt.Sprintf("n%d-%s.sock", s.index, strings.ReplaceAll(mac, ":", "")))
	if len(sock) > maxSocketPath {
		return nil, fmt.Errorf("service %q: network %q: socket path %s is %d bytes, over the %d a unix socket allows: use a shorter state directory", who, s.name, sock, len(sock), maxSocketPath)
	}
	if fi, err := os.Lstat(sock); err == nil && fi.Mode()&os.ModeSocket != 0 {
		os.Remove(sock) // left by an earlier process
	}
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("service %q: network %q: %w", who, s.name, err)
	}
	n := &attached{
		NIC: NIC{
			Network: s.name,
			Socket:  sock,
			MAC:     mac,
			Address: netip.PrefixFrom(ip, s.prefix.Bits()),
			Gateway: s.gateway,
			DNS:     s.gateway,
			Search:  []string{m.domain},
			MTU:     DefaultMTU,
		},
		seg:     s,
		aliases: lowerAll(a.Aliases),
		ln:      ln,
		conns:   map[net.Conn]struct{}{},
	}
	s.leases[mac] = ip
	go n.serve(m.ctx, m.log)
	return n, nil
}

// serve hands each connection on the NIC's socket to the segment's switch
// (a restarted VM connects again).
func (n *attached) serve(ctx context.Context, log *slog.Logger) {
	for {
		c, err := n.ln.Accept()
		if err != nil {
			return
		}
		go n.serveConn(ctx, log, c, false)
	}
}

// serveConn runs one connection of the NIC through the switch until it
// ends, the NIC is detached or ctx is done.
func (n *attached) serveConn(ctx context.Context, log *slog.Logger, c net.Conn, datagram bool) error {
	n.mu.Lock()
	if n.conns == nil { // detached
		n.mu.Unlock()
		c.Close()
		return ErrClosed
	}
	n.conns[c] = struct{}{}
	n.mu.Unlock()
	log.Debug("nic connected", "network", n.seg.name, "mac", n.MAC)
	err := n.seg.sw.serve(ctx, n.MAC, n.Address.Addr(), c, datagram)
	log.Debug("nic disconnected", "network", n.seg.name, "mac", n.MAC, "err", err)
	n.mu.Lock()
	delete(n.conns, c)
	n.mu.Unlock()
	c.Close()
	return err
}

// ServeDatagram joins an attached instance's NIC on a network through
// conn, a connected datagram socket carrying one Ethernet frame per
// message: one end of a unix SOCK_DGRAM socketpair whose other end is
// vz's VZFileHandleNetworkDeviceAttachment (give both ends large buffers:
// SO_SNDBUF 1 MiB, SO_RCVBUF 4 MiB). It is the alternative to the NIC's
// Socket and returns when conn fails, ctx is done or the instance is
// detached; conn is closed then.
func (m *Manager) ServeDatagram(ctx context.Context, instance, network string, conn net.Conn) error {
	m.mu.RLock()
	in, ok := m.instances[instance]
	var n *attached
	if ok {
		for _, a := range in.nics {
			if a.seg.name == network {
				n = a
			}
		}
	}
	m.mu.RUnlock()
	if n == nil {
		conn.Close()
		return fmt.Errorf("instance %q: not attached to network %q", instance, network)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(m.ctx, cancel)
	defer stop()
	return n.serveConn(ctx, m.log, conn, true)
}

// close stops listening, disconnects the VM and releases the lease.
func (n *attached) close() {
	n.ln.Close()
	os.Remove(n.Socket)
	n.mu.Lock()
	for c := range n.conns {
		c.Close()
	}
	n.conns = nil
	n.mu.Unlock()
	delete(n.seg.leases, n.MAC)
}

func (in *instance) list() []NIC {
	out := make([]NIC, len(in.nics))
	for i, n := range in.nics {
		out[i] = n.NIC
		out[i].Search = slices.Clone(n.Search)
	}
	return out
}

// NICs returns an attached instance's NICs.
func (m *Manager) NICs(instance string) ([]NIC, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	in, ok := m.instances[instance]
	if !ok {
		return nil, false
	}
	return in.list(), true
}

// Detach removes an instance from its networks: its published ports are
// closed, its VM's NICs disconnected, its leases and names removed.
// Detaching an instance that is not attached returns nil.
func (m *Manager) Detach(instance string) error {
	m.mu.Lock()
	in, ok := m.instances[instance]
	if ok {
		delete(m.instances, instance)
		m.order = slices.DeleteFunc(m.order, func(s string) bool { return s == instance })
		for _, n := range in.nics {
			n.close()
		}
	}
	m.mu.Unlock()
	if ok {
		closeBindings(in.ports)
	}
	return nil
}

// Close detaches every instance and stops the segments. It is idempotent.
func (m *Manager) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	var ports []*binding
	for _, in := range m.instances {
		for _, n := range in.nics {
			n.close()
		}
		ports = append(ports, in.ports...)
	}
	m.instances = map[string]*instance{}
	m.order = nil
	segs := m.segments
	m.mu.Unlock()
	closeBindings(ports)
	m.cancel()
	for _, s := range segs {
		s.close()
	}
	return nil
}

// DialContext connects from the host to a guest on a network, with the
// gateway's address as the source: network is "tcp" or "udp", address a
// guest's "ip:port". The gateway's own services (DNS, DHCP) cannot be
// dialled this way.
func (m *Manager) DialContext(ctx context.Context, networkName, network, address string) (net.Conn, error) {
	m.mu.RLock()
	s, ok := m.byName[networkName]
	closed := m.closed
	m.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("network %q: %w", networkName, ErrUnknownNetwork)
	}
	if closed {
		return nil, ErrClosed
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, fmt.Errorf("network %q: address %q: %w", networkName, address, err)
	}
	return s.dial(ctx, network, ap)
}
