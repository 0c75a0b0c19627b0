package network

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// upstreamTimeout bounds a lookup of a name outside the project.
const upstreamTimeout = 5 * time.Second

// hostNames resolve to the gateway for every instance, whether or not it
// may reach the host's loopback there (Endpoint.HostLoopback): the
// refusal is the gateway's, at connect, where it cannot be sidestepped
// (the address is known without a name) and says what it is, a refused
// connection. No answer would hide nothing, would make the name's
// meaning depend on the asker, and would leave tools that probe
// host.docker.internal with a resolver failure to puzzle over.
var hostNames = []string{"host.containers.internal", "host.docker.internal"}

// rotor turns multi-address answers round-robin.
type rotor struct{ n atomic.Uint32 }

func (r *rotor) rotate(addrs []netip.Addr) []netip.Addr {
	if len(addrs) < 2 {
		return addrs
	}
	k := int(r.n.Add(1)-1) % len(addrs)
	return append(addrs[k:len(addrs):len(addrs)], addrs[:k]...)
}

// serveDNS answers one query. Names of the project are answered here,
// with A records only (other types get an empty answer); unknown names
// in the project's domain and single-label names get NXDOMAIN; the rest
// goes to the upstream resolver unless the network is internal.
func (s *segment) serveDNS(w dns.ResponseWriter, r *dns.Msg) {
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = !s.internal
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	var src netip.Addr
	_, isTCP := w.RemoteAddr().(*net.TCPAddr)
	if ap, err := netip.ParseAddrPort(w.RemoteAddr().String()); err == nil {
		src = ap.Addr().Unmap()
	}
	addrs, known := s.m.lookup(s, src, q.Name)
	ptr, reverse := "", false
	if q.Qtype == dns.TypePTR {
		ptr, reverse = s.m.reverse(s, src, q.Name)
	}
	switch {
	case reverse:
		m.Authoritative = true
		if ptr == "" {
			m.Rcode = dns.RcodeNameError
			break
		}
		m.Answer = append(m.Answer, &dns.PTR{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypePTR, Class: dns.ClassINET, Ttl: 0},
			Ptr: dns.Fqdn(ptr),
		})
	case known:
		m.Authoritative = true
		if q.Qtype == dns.TypeA || q.Qtype == dns.TypeANY {
			for _, a := range s.rr.rotate(addrs) {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 0},
					A:   net.IP(a.AsSlice()),
				})
			}
		}
	case s.internal || s.m.local(q.Name):
		m.Authoritative = true
		m.Rcode = dns.RcodeNameError
	default:
		s.upstream(m, q)
	}
	if !isTCP {
		size := dns.MinMsgSize
		if e := r.IsEdns0(); e != nil {
			size = int(e.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// Optional abilities of a Resolver, which *net.Resolver has: without
// them those record types of outside names get an empty answer.
type (
	txtResolver interface {
		LookupTXT(ctx context.Context, name string) ([]string, error)
	}
	mxResolver interface {
		LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	}
	srvResolver interface {
		LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
	}
)

var (
	_ Resolver    = (*net.Resolver)(nil)
	_ txtResolver = (*net.Resolver)(nil)
	_ mxResolver  = (*net.Resolver)(nil)
	_ srvResolver = (*net.Resolver)(nil)
)

// upstream answers a query for an outside name through the configured
// resolver: A, and TXT, MX and SRV when it can; other types (AAAA: the
// segments are IPv4 only) get an empty answer.
func (s *segment) upstream(m *dns.Msg, q dns.Question) {
	ctx, cancel := context.WithTimeout(s.m.ctx, upstreamTimeout)
	defer cancel()
	name := strings.TrimSuffix(q.Name, ".")
	hdr := func(t uint16) dns.RR_Header {
		return dns.RR_Header{Name: q.Name, Rrtype: t, Class: dns.ClassINET, Ttl: 0}
	}
	var err error
	switch r := s.m.cfg.Resolver; q.Qtype {
	case dns.TypeA:
		var addrs []netip.Addr
		addrs, err = r.LookupNetIP(ctx, "ip4", name)
		for _, a := range addrs {
			if a = a.Unmap(); a.Is4() {
				m.Answer = append(m.Answer, &dns.A{Hdr: hdr(dns.TypeA), A: net.IP(a.AsSlice())})
			}
		}
	case dns.TypeTXT:
		if tr, ok := r.(txtResolver); ok {
			var txts []string
			txts, err = tr.LookupTXT(ctx, name)
			for _, txt := range txts {
				m.Answer = append(m.Answer, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: splitTXT(txt)})
			}
		}
	case dns.TypeMX:
		if mr, ok := r.(mxResolver); ok {
			var mxs []*net.MX
			mxs, err = mr.LookupMX(ctx, name)
			for _, mx := range mxs {
				m.Answer = append(m.Answer, &dns.MX{Hdr: hdr(dns.TypeMX), Mx: dns.Fqdn(mx.Host), Preference: mx.Pref})
			}
		}
	case dns.TypeSRV:
		if sr, ok := r.(srvResolver); ok {
			var srvs []*net.SRV
			_, srvs, err = sr.LookupSRV(ctx, "", "", name)
			for _, v := range srvs {
				m.Answer = append(m.Answer, &dns.SRV{Hdr: hdr(dns.TypeSRV), Target: dns.Fqdn(v.Target), Port: v.Port, Priority: v.Priority, Weight: v.Weight})
			}
		}
	}
	if err != nil {
		m.Answer = nil
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			m.Rcode = dns.RcodeNameError
		} else {
			m.Rcode = dns.RcodeServerFailure
		}
		s.m.log.Debug("dns upstream", "network", s.name, "name", q.Name, "type", dns.TypeToString[q.Qtype], "err", err)
	}
}

// splitTXT cuts a TXT value into strings of at most 255 bytes.
func splitTXT(s string) []string {
	var out []string
	for len(s) > 255 {
		out = append(out, s[:255])
		s = s[255:]
	}
	return append(out, s)
}

// local says whether a name belongs to the project's namespace: a single
// label, or a name in the project's domain.
func (m *Manager) local(fqdn string) bool {
	name := strings.Trim(strings.ToLower(fqdn), ".")
	return !strings.Contains(name, ".") || name == m.domain || strings.HasSuffix(name, "."+m.domain)
}

// lookup resolves a project name as the instance with address src on s
// sees it: names on every network it shares with others, each answered
// with the address on the shared network. A querier that is no instance
// (the host, an unknown guest) sees s only. known is false when no
// instance has the name.
func (m *Manager) lookup(s *segment, src netip.Addr, fqdn string) (addrs []netip.Addr, known bool) {
	name := strings.Trim(strings.ToLower(fqdn), ".")
	if short, ok := strings.CutSuffix(name, "."+m.domain); ok {
		name = short
	}
	if slices.Contains(hostNames, name) {
		if s.internal {
			return nil, false
		}
		return []netip.Addr{s.gateway}, true
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	views := []*segment{s}
	if q := m.instanceAt(s, src); q != nil {
		for _, n := range q.nics {
			if n.seg != s {
				views = append(views, n.seg)
			}
		}
	}
	for _, v := range views {
		for _, id := range m.order {
			in := m.instances[id]
			for _, n := range in.nics {
				if n.seg != v || !in.answers(n, name) {
					continue
				}
				known = true
				if a := n.Address.Addr(); !slices.Contains(addrs, a) {
					addrs = append(addrs, a)
				}
			}
		}
	}
	return addrs, known
}

// reverse answers a PTR query for an address of the project's subnets:
// the instance name in the project's domain, as the querier sees it, or
// "" when no instance it can see has the address. ok is false for
// addresses outside the project's subnets.
func (m *Manager) reverse(s *segment, src netip.Addr, fqdn string) (name string, ok bool) {
	rev, found := strings.CutSuffix(strings.ToLower(fqdn), ".in-addr.arpa.")
	if !found {
		return "", false
	}
	parts := strings.Split(rev, ".")
	if len(parts) != 4 {
		return "", false
	}
	slices.Reverse(parts)
	a, err := netip.ParseAddr(strings.Join(parts, "."))
	if err != nil || !slices.ContainsFunc(m.subnets, func(p netip.Prefix) bool { return p.Contains(a) }) {
		return "", false
	}
	if a == s.gateway {
		return "", true
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	views := []*segment{s}
	if q := m.instanceAt(s, src); q != nil {
		for _, n := range q.nics {
			views = append(views, n.seg)
		}
	}
	for _, v := range views {
		if in := m.instanceAt(v, a); in != nil {
			return in.ep.Instance + "." + m.domain, true
		}
	}
	return "", true
}

// instanceAt is the instance whose NIC on s has address a. m.mu is held.
func (m *Manager) instanceAt(s *segment, a netip.Addr) *instance {
	if !a.IsValid() {
		return nil
	}
	for _, in := range m.instances {
		for _, n := range in.nics {
			if n.seg == s && n.Address.Addr() == a {
				return in
			}
		}
	}
	return nil
}

// answers says whether name is one of the instance's names on n's network.
func (in *instance) answers(n *attached, name string) bool {
	return name == strings.ToLower(in.ep.Instance) || name == strings.ToLower(in.ep.Service) ||
		slices.Contains(in.ep.Names, name) || slices.Contains(n.aliases, name)
}
