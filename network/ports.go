package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/compose-spec/compose-go/v2/types"
)

// Binding is one published port: a host address forwarded to the
// instance's port on one of its networks.
type Binding struct {
	// HostIP is the address listened on; empty means all of the host's.
	HostIP   string `json:"host_ip,omitempty"`
	HostPort uint16 `json:"host_port"`
	Target   uint16 `json:"target"`
	Protocol string `json:"protocol"` // "tcp" or "udp"
	// Network is the network the guest is reached through.
	Network string `json:"network"`
}

func (b Binding) String() string {
	return fmt.Sprintf("%s->%d/%s", net.JoinHostPort(b.HostIP, strconv.Itoa(int(b.HostPort))), b.Target, b.Protocol)
}

// binding is a published port that is being served.
type binding struct {
	Binding
	ln net.Listener
	pc net.PacketConn

	mu    sync.Mutex
	conns map[net.Conn]struct{} // nil once closed
}

func closeBindings(bs []*binding) {
	for _, b := range bs {
		b.close()
	}
}

func (b *binding) close() {
	if b.ln != nil {
		b.ln.Close()
	}
	if b.pc != nil {
		b.pc.Close()
	}
	b.mu.Lock()
	for c := range b.conns {
		c.Close()
	}
	b.conns = nil
	b.mu.Unlock()
}

func (b *binding) track(c net.Conn) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.conns == nil {
		return false
	}
	b.conns[c] = struct{}{}
	return true
}

func (b *binding) untrack(c net.Conn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.conns, c)
}

// Publish listens on the host for each of compose's ports (short and long
// syntax alike, as compose-go loads them) and forwards to the instance's
// address on its default network (see NIC.Default). A published range
// with one target takes the first free port of the range, as docker does;
// an empty published port takes any free one. An empty host_ip listens
// on all the host's addresses; "127.0.0.1" stays local.
//
// Publish replaces the instance's published ports: the old ones are
// closed first, so republishing the same ports works. It returns what it
// bound. On error the instance has no published ports left, and the error
// names the service and the port and, for a taken port, wraps
// ErrPortInUse.
func (m *Manager) Publish(instance string, ports []types.ServicePortConfig) ([]Binding, error) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	in, ok := m.instances[instance]
	if !ok {
		m.mu.Unlock()
		return nil, fmt.Errorf("instance %q: publishing ports: not attached to any network", instance)
	}
	old := in.ports
	in.ports = nil
	who := in.ep.Service
	if who == "" {
		who = in.ep.Instance
	}
	m.mu.Unlock()
	closeBindings(old)

	var target *attached
	for _, n := range in.nics {
		if n.Default {
			target = n
			break
		}
	}
	var bound []*binding
	fail := func(err error) ([]Binding, error) {
		closeBindings(bound)
		return nil, err
	}
	for _, p := range ports {
		if target == nil {
			return fail(fmt.Errorf("service %q: publishing port %d: the service is on internal networks only", who, p.Target))
		}
		b, err := m.publishOne(target, p)
		if err != nil {
			return fail(fmt.Errorf("service %q: %w", who, err))
		}
		bound = append(bound, b)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.instances[instance] != in || m.closed {
		return fail(fmt.Errorf("instance %q: publishing ports: detached meanwhile", instance))
	}
	in.ports = bound
	out := make([]Binding, len(bound))
	for i, b := range bound {
		out[i] = b.Binding
	}
	m.log.Debug("published", "instance", instance, "ports", out)
	return out, nil
}

// Unpublish closes the instance's published ports and the connections
// through them. It returns nil when there are none.
func (m *Manager) Unpublish(instance string) error {
	m.mu.Lock()
	var old []*binding
	if in, ok := m.instances[instance]; ok {
		old, in.ports = in.ports, nil
	}
	m.mu.Unlock()
	closeBindings(old)
	return nil
}

// Ports returns the instance's published ports.
func (m *Manager) Ports(instance string) []Binding {
	m.mu.RLock()
	defer m.mu.RUnlock()
	in, ok := m.instances[instance]
	if !ok {
		return nil
	}
	out := make([]Binding, len(in.ports))
	for i, b := range in.ports {
		out[i] = b.Binding
	}
	return out
}

func (m *Manager) publishOne(n *attached, p types.ServicePortConfig) (*binding, error) {
	proto := strings.ToLower(p.Protocol)
	if proto == "" {
		proto = "tcp"
	}
	spec := fmt.Sprintf("%s:%d/%s", p.Published, p.Target, proto)
	if p.HostIP != "" {
		spec = p.HostIP + ":" + spec
	}
	if proto != "tcp" && proto != "udp" {
		return nil, fmt.Errorf("port %s: protocol %q is not supported (tcp or udp)", spec, p.Protocol)
	}
	if p.Target == 0 || p.Target > 65535 {
		return nil, fmt.Errorf("port %s: target %d is not a port number", spec, p.Target)
	}
	lo, hi, err := portRange(p.Published)
	if err != nil {
		return nil, fmt.Errorf("port %s: %w", spec, err)
	}
	host := p.HostIP
	if host != "" {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return nil, fmt.Errorf("port %s: host_ip %q is not an IP address", spec, host)
		}
		host = a.String()
	}
	guest := netip.AddrPortFrom(n.Address.Addr(), uint16(p.Target))
	b := &binding{
		Binding: Binding{HostIP: host, Target: uint16(p.Target), Protocol: proto, Network: n.seg.name},
		conns:   map[net.Conn]struct{}{},
	}
	for port := lo; ; port++ {
		addr := net.JoinHostPort(host, strconv.Itoa(port))
		if proto == "tcp" {
			b.ln, err = net.Listen("tcp", addr)
		} else {
			b.pc, err = net.ListenPacket("udp", addr)
		}
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || port >= hi {
			break
		}
	}
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("publishing port %s: %w: another program or service holds it; free it or publish another port", spec, ErrPortInUse)
		}
		return nil, fmt.Errorf("publishing port %s: %w", spec, err)
	}
	if b.ln != nil {
		b.HostPort = uint16(b.ln.Addr().(*net.TCPAddr).Port)
		go m.serveTCP(b, n.seg, guest)
	} else {
		b.HostPort = uint16(b.pc.LocalAddr().(*net.UDPAddr).Port)
		u := &udpProxy{pc: b.pc, dial: func() (net.Conn, error) { return n.seg.dial(m.ctx, "udp", guest) }}
		go u.run()
	}
	return b, nil
}

// portRange parses compose's published port: "", "8080" or "8000-8010".
func portRange(s string) (lo, hi int, err error) {
	if s == "" {
		return 0, 0, nil
	}
	a, z, isRange := strings.Cut(s, "-")
	lo, err = strconv.Atoi(a)
	if err == nil && isRange {
		hi, err = strconv.Atoi(z)
	} else {
		hi = lo
	}
	if err != nil || lo < 1 || hi > 65535 || hi < lo {
		return 0, 0, fmt.Errorf("published port %q is not a port or a range such as 8000-8010", s)
	}
	return lo, hi, nil
}

// serveTCP forwards each accepted connection to guest on seg.
func (m *Manager) serveTCP(b *binding, seg *segment, guest netip.AddrPort) {
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		if !b.track(c) {
			c.Close()
			return
		}
		go func() {
			defer b.untrack(c)
			ctx, cancel := context.WithTimeout(m.ctx, dialTimeout)
			g, err := seg.dial(ctx, "tcp", guest)
			cancel()
			if err != nil {
				m.log.Debug("published port", "port", b.Binding, "to", guest, "err", err)
				c.Close()
				return
			}
			if !b.track(g) {
				c.Close()
				g.Close()
				return
			}
			defer b.untrack(g)
			pipe(c, g)
		}()
	}
}
