package network_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/miekg/dns"

	"github.com/vmcompose/vmcompose/network"
)

// fakeResolver stands for the host's resolver, so no query leaves the
// machine; it records what it was asked.
type fakeResolver struct {
	mu    sync.Mutex
	asked []string
}

func (r *fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked = append(r.asked, host)
	if host == "outside.test" {
		return []netip.Addr{netip.MustParseAddr("192.0.2.7")}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

func (r *fakeResolver) LookupTXT(_ context.Context, name string) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.asked = append(r.asked, "TXT "+name)
	if name == "outside.test" {
		return []string{"v=test " + strings.Repeat("x", 300)}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

func (r *fakeResolver) names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.asked)
}

func newManager(t *testing.T, nets ...network.NetworkConfig) (*network.Manager, *fakeResolver) {
	t.Helper()
	res := &fakeResolver{}
	m, err := network.New(context.Background(), network.Config{
		Project:  "proj",
		StateDir: shortDir(t),
		Networks: nets,
		Resolver: res,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, res
}

// shortDir is a temporary directory with a short path: t.TempDir's can
// be too long for unix sockets.
func shortDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "vmc-net-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func attach(t *testing.T, m *network.Manager, ep network.Endpoint, nets ...network.Attachment) []network.NIC {
	t.Helper()
	nics, err := m.Attach(ep, nets)
	if err != nil {
		t.Fatal(err)
	}
	return nics
}

// query asks a DNS server through conn, a UDP connection to it.
func query(t *testing.T, conn net.Conn, name string, qtype uint16) *dns.Msg {
	t.Helper()
	msg := new(dns.Msg)
	msg.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Conn{Conn: conn}
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMsg(msg); err != nil {
		t.Fatal(err)
	}
	r, err := c.ReadMsg()
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	return r
}

// answers are the A records of r, sorted, or "NXDOMAIN".
func answers(r *dns.Msg) string {
	if r.Rcode != dns.RcodeSuccess {
		return dns.RcodeToString[r.Rcode]
	}
	var out []string
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

// dnsConn is a UDP connection to a network's DNS server from a probe
// guest attached to that network only.
func dnsConn(t *testing.T, m *network.Manager, netName string) net.Conn {
	t.Helper()
	nics := attach(t, m, network.Endpoint{Instance: "probe-" + netName, Service: "probe-" + netName}, network.Attachment{Network: netName})
	g := newFakeGuest(t, nics[0])
	c, err := g.dialUDP(netip.AddrPortFrom(nics[0].DNS, 53))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestSubnetsAndAddresses(t *testing.T) {
	m, _ := newManager(t,
		network.NetworkConfig{Name: "default"},
		network.NetworkConfig{Name: "back", Subnet: "10.89.0.0/24"},
		network.NetworkConfig{Name: "front"},
		network.NetworkConfig{Name: "wide", Subnet: "172.30.0.0/16"},
	)
	for name, want := range map[string]string{
		"default": "10.89.1.0/24", // 10.89.0.0/24 is back's
		"back":    "10.89.0.0/24",
		"front":   "10.89.2.0/24",
		"wide":    "172.30.0.0/16",
	} {
		if got, _ := m.Subnet(name); got.String() != want {
			t.Errorf("network %s: subnet %s, want %s", name, got, want)
		}
	}
	nics := attach(t, m, network.Endpoint{Instance: "web-1", Service: "web"},
		network.Attachment{Network: "back"},
		network.Attachment{Network: "default", IP: netip.MustParseAddr("10.89.1.9"), MAC: "02:00:00:00:00:09"})
	if got := nics[0]; got.Address.String() != "10.89.0.2/24" || got.Gateway.String() != "10.89.0.1" || got.DNS.String() != "10.89.0.1" ||
		!got.Default || got.MTU != 1500 || !slices.Equal(got.Search, []string{"proj.internal"}) || !strings.HasPrefix(got.MAC, "52:54:00:") {
		t.Errorf("first NIC %+v", got)
	}
	if got := nics[1]; got.Address.String() != "10.89.1.9/24" || got.MAC != "02:00:00:00:00:09" || got.Default {
		t.Errorf("second NIC %+v", got)
	}
	if nics[0].Socket == nics[1].Socket {
		t.Error("two NICs share a socket")
	}
	// Idempotent: the same NICs again.
	again := attach(t, m, network.Endpoint{Instance: "web-1", Service: "web"},
		network.Attachment{Network: "back"},
		network.Attachment{Network: "default", IP: netip.MustParseAddr("10.89.1.9"), MAC: "02:00:00:00:00:09"})
	if fmt.Sprint(again) != fmt.Sprint(nics) {
		t.Errorf("second Attach: %+v, want %+v", again, nics)
	}
	// Changing networks or addresses needs a Detach first.
	if _, err := m.Attach(network.Endpoint{Instance: "web-1", Service: "web"}, []network.Attachment{{Network: "back"}}); err == nil {
		t.Error("re-attaching to fewer networks succeeded")
	}
	if _, err := m.Attach(network.Endpoint{Instance: "web-1", Service: "web"}, []network.Attachment{{Network: "back", IP: netip.MustParseAddr("10.89.0.50")}, {Network: "default"}}); err == nil {
		t.Error("re-attaching with another address succeeded")
	}
	n2 := attach(t, m, network.Endpoint{Instance: "web-2", Service: "web"}, network.Attachment{Network: "back"})
	if n2[0].Address.String() != "10.89.0.3/24" || n2[0].MAC == nics[0].MAC {
		t.Errorf("web-2: %+v", n2[0])
	}
	for _, tc := range []struct {
		att  network.Attachment
		want string
	}{
		{network.Attachment{Network: "nope"}, `service "db": network "nope": no such network (the project has "default", "back", "front", "wide")`},
		{network.Attachment{Network: "back", IP: netip.MustParseAddr("10.89.0.3")}, `service "db": network "back": ipv4_address 10.89.0.3: taken by another instance`},
		{network.Attachment{Network: "back", IP: netip.MustParseAddr("10.89.0.1")}, `service "db": network "back": ipv4_address 10.89.0.1: the network's gateway`},
		{network.Attachment{Network: "back", IP: netip.MustParseAddr("10.90.0.5")}, `service "db": network "back": ipv4_address 10.90.0.5: not in the network's subnet 10.89.0.0/24`},
		{network.Attachment{Network: "back", MAC: "02:00:00:00:00:09x"}, `service "db": network "back": mac_address "02:00:00:00:00:09x": not a MAC address such as 52:54:00:12:34:56`},
	} {
		_, err := m.Attach(network.Endpoint{Instance: "db-1", Service: "db"}, []network.Attachment{tc.att})
		if err == nil || err.Error() != tc.want {
			t.Errorf("Attach %+v: %v, want %s", tc.att, err, tc.want)
		}
	}
	// ipam's gateway: not the first address, which the first instance gets.
	gm, _ := newManager(t, network.NetworkConfig{Name: "g", Subnet: "10.70.0.0/24", Gateway: "10.70.0.254"})
	gn := attach(t, gm, network.Endpoint{Instance: "a-1"}, network.Attachment{Network: "g"})[0]
	if gn.Address.String() != "10.70.0.1/24" || gn.Gateway.String() != "10.70.0.254" || gn.DNS.String() != "10.70.0.254" {
		t.Errorf("NIC with ipam gateway .254: %+v", gn)
	}
	if got := answers(query(t, dnsConn(t, gm, "g"), "a-1", dns.TypeA)); got != "10.70.0.1" {
		t.Errorf("a-1 from the DNS server on .254: %s", got)
	}
	// Detach frees the address for the next instance.
	if err := m.Detach("web-1"); err != nil {
		t.Fatal(err)
	}
	n3 := attach(t, m, network.Endpoint{Instance: "web-3", Service: "web"}, network.Attachment{Network: "back"})
	if n3[0].Address.String() != "10.89.0.2/24" {
		t.Errorf("after Detach, web-3 got %s, want the freed 10.89.0.2/24", n3[0].Address)
	}
}

func TestNewErrors(t *testing.T) {
	for _, tc := range []struct {
		nets []network.NetworkConfig
		want string
	}{
		{[]network.NetworkConfig{{Name: "a", Subnet: "10.1.0.0/16"}, {Name: "b", Subnet: "10.1.2.0/24"}}, `network "b": subnet 10.1.2.0/24 overlaps network "a"'s 10.1.0.0/16`},
		{[]network.NetworkConfig{{Name: "a", Subnet: "fd00::/64"}}, `network "a": subnet "fd00::/64": only IPv4 subnets are supported`},
		{[]network.NetworkConfig{{Name: "a", Subnet: "10.1.0.0"}}, `network "a": subnet "10.1.0.0": not a CIDR prefix such as 10.90.0.0/24`},
		{[]network.NetworkConfig{{Name: "a"}, {Name: "a"}}, `network "a": listed twice`},
		{[]network.NetworkConfig{{Name: "a", Subnet: "10.1.0.0/24", Gateway: "10.1.1.1"}}, `network "a": gateway "10.1.1.1": not a host address of the subnet 10.1.0.0/24`},
	} {
		_, err := network.New(context.Background(), network.Config{Project: "p", StateDir: shortDir(t), Networks: tc.nets})
		if err == nil || err.Error() != tc.want {
			t.Errorf("New(%+v): %v, want %s", tc.nets, err, tc.want)
		}
	}
}

// TestDNS checks the names each network answers: service names (all
// replicas, round-robin), replica names, container_name and hostname,
// per-network aliases; an instance on two networks sees the names of
// both; names of the project never go upstream; other names do, except
// from internal networks.
func TestDNS(t *testing.T) {
	m, res := newManager(t,
		network.NetworkConfig{Name: "front"},
		network.NetworkConfig{Name: "back"},
		network.NetworkConfig{Name: "secret", Internal: true},
	)
	attach(t, m, network.Endpoint{Instance: "web-1", Service: "web"}, network.Attachment{Network: "front", Aliases: []string{"www"}})
	attach(t, m, network.Endpoint{Instance: "web-2", Service: "web"}, network.Attachment{Network: "front", Aliases: []string{"www"}})
	attach(t, m, network.Endpoint{Instance: "db-1", Service: "db", Names: []string{"database", "dbhost"}},
		network.Attachment{Network: "back", Aliases: []string{"pg"}}, network.Attachment{Network: "secret"})
	api := attach(t, m, network.Endpoint{Instance: "api-1", Service: "api"},
		network.Attachment{Network: "front"}, network.Attachment{Network: "back", Aliases: []string{"backend"}})

	front, back, secret := dnsConn(t, m, "front"), dnsConn(t, m, "back"), dnsConn(t, m, "secret")
	for _, tc := range []struct {
		conn  net.Conn
		name  string
		want  string
		label string
	}{
		{front, "web", "10.89.0.2 10.89.0.3", "front"},
		{front, "WEB.proj.internal", "10.89.0.2 10.89.0.3", "front"},
		{front, "web-1", "10.89.0.2", "front"},
		{front, "web-2.proj.internal", "10.89.0.3", "front"},
		{front, "www", "10.89.0.2 10.89.0.3", "front"},
		{front, "api", "10.89.0.4", "front"},
		{front, "backend", "NXDOMAIN", "front"}, // alias on back only
		{front, "db", "NXDOMAIN", "front"},
		{front, "pg", "NXDOMAIN", "front"},
		{front, "nothing.proj.internal", "NXDOMAIN", "front"},
		{front, "host.containers.internal", "10.89.0.1", "front"},
		{front, "host.docker.internal", "10.89.0.1", "front"},
		{back, "db", "10.89.1.2", "back"},
		{back, "database", "10.89.1.2", "back"},
		{back, "dbhost", "10.89.1.2", "back"},
		{back, "pg", "10.89.1.2", "back"},
		{back, "backend", "10.89.1.3", "back"},
		{back, "api", "10.89.1.3", "back"},
		{back, "web", "NXDOMAIN", "back"},
		{secret, "db", "10.89.2.2", "secret"},
		{secret, "pg", "NXDOMAIN", "secret"},
		{secret, "host.containers.internal", "NXDOMAIN", "secret"},
		{secret, "outside.test", "NXDOMAIN", "secret"},
		{front, "outside.test", "192.0.2.7", "front"},
	} {
		if got := answers(query(t, tc.conn, tc.name, dns.TypeA)); got != tc.want {
			t.Errorf("%s on %s: %s, want %s", tc.name, tc.label, got, tc.want)
		}
	}
	if got := res.names(); !slices.Equal(got, []string{"outside.test"}) {
		t.Errorf("the upstream resolver was asked %q, want only outside.test", got)
	}
	// TXT goes upstream too (through the optional LookupTXT), in strings
	// of at most 255 bytes; a project name's TXT does not.
	r := query(t, front, "outside.test", dns.TypeTXT)
	if len(r.Answer) != 1 || strings.Join(r.Answer[0].(*dns.TXT).Txt, "") != "v=test "+strings.Repeat("x", 300) || len(r.Answer[0].(*dns.TXT).Txt) != 2 {
		t.Errorf("TXT outside.test: %v", r)
	}
	if r := query(t, front, "web", dns.TypeTXT); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("TXT web: %v", r)
	}
	if r := query(t, front, "missing.test", dns.TypeTXT); r.Rcode != dns.RcodeNameError {
		t.Errorf("TXT missing.test: %v", r)
	}
	if got := res.names(); !slices.Equal(got, []string{"outside.test", "TXT outside.test", "TXT missing.test"}) {
		t.Errorf("the upstream resolver was asked %q", got)
	}
	// AAAA of a project name: an empty answer, not NXDOMAIN, not upstream.
	if r := query(t, front, "web", dns.TypeAAAA); r.Rcode != dns.RcodeSuccess || len(r.Answer) != 0 {
		t.Errorf("AAAA web: %v", r)
	}
	// Round-robin: the first answer changes between queries.
	firsts := map[string]bool{}
	for range 4 {
		r := query(t, front, "web", dns.TypeA)
		firsts[r.Answer[0].(*dns.A).A.String()] = true
	}
	if len(firsts) != 2 {
		t.Errorf("first answers for web over 4 queries: %v, want both replicas", firsts)
	}

	// api-1 is on front and back: from its front address it resolves
	// back's names to their back addresses.
	g := newFakeGuest(t, api[0])
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := g.dialUDP(netip.AddrPortFrom(api[0].DNS, 53))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for name, want := range map[string]string{"db": "10.89.1.2", "pg": "10.89.1.2", "web": "10.89.0.2 10.89.0.3", "api-1": "10.89.0.4 10.89.1.3"} {
		if got := answers(query(t, c, name, dns.TypeA)); got != want {
			t.Errorf("%s asked by api-1: %s, want %s", name, got, want)
		}
	}
	// The same over TCP.
	tc, err := g.dialTCP(ctx, netip.AddrPortFrom(api[0].DNS, 53))
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if got := answers(query(t, tc, "web", dns.TypeA)); got != "10.89.0.2 10.89.0.3" {
		t.Errorf("web asked by api-1 over TCP: %s", got)
	}

	// Detach removes the names.
	m.Detach("web-1")
	if got := answers(query(t, front, "web", dns.TypeA)); got != "10.89.0.3" {
		t.Errorf("web after detaching web-1: %s", got)
	}
}

// TestNAT: a guest that opted in reaches a listener on the host's
// loopback through its gateway address, cannot reach another network's
// addresses, and an internal network reaches nothing, opted in or not.
func TestNAT(t *testing.T) {
	m, _ := newManager(t, network.NetworkConfig{Name: "a"}, network.NetworkConfig{Name: "b"}, network.NetworkConfig{Name: "in", Internal: true})
	na := attach(t, m, network.Endpoint{Instance: "x-1", Service: "x", HostLoopback: true}, network.Attachment{Network: "a"})
	nb := attach(t, m, network.Endpoint{Instance: "y-1", Service: "y"}, network.Attachment{Network: "b"})
	ni := attach(t, m, network.Endpoint{Instance: "z-1", Service: "z", HostLoopback: true}, network.Attachment{Network: "in"})
	ga, gb, gi := newFakeGuest(t, na[0]), newFakeGuest(t, nb[0]), newFakeGuest(t, ni[0])

	host, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	go func() {
		for {
			c, err := host.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "hello from the host")
			c.Close()
		}
	}()
	port := uint16(host.Addr().(*net.TCPAddr).Port)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	c, err := ga.dialTCP(ctx, netip.AddrPortFrom(na[0].Gateway, port))
	if err != nil {
		t.Fatalf("guest to host loopback through the gateway: %v", err)
	}
	b, _ := io.ReadAll(c)
	c.Close()
	if string(b) != "hello from the host" {
		t.Errorf("guest read %q from the host", b)
	}

	// b's guest listens; a's guest cannot connect to it, not even through
	// the host, and the refusal is quick.
	ln := gb.listenTCP(t, 8080)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	t0 := time.Now()
	if c, err := ga.dialTCP(ctx, netip.AddrPortFrom(nb[0].Address.Addr(), 8080)); err == nil {
		c.Close()
		t.Error("a guest on network a connected to a guest on network b")
	} else if time.Since(t0) > 5*time.Second {
		t.Errorf("refusal took %v", time.Since(t0))
	}
	// The internal network's guest gets no host loopback.
	if c, err := gi.dialTCP(ctx, netip.AddrPortFrom(ni[0].Gateway, port)); err == nil {
		c.Close()
		t.Error("a guest on an internal network reached the host")
	}
}

// TestPublish: published TCP and UDP ports reach the guest, 127.0.0.1
// binds stay on that address while empty host_ip binds all, a taken
// port is an error naming the service and the port.
func TestPublish(t *testing.T) {
	m, _ := newManager(t, network.NetworkConfig{Name: "default"})
	nics := attach(t, m, network.Endpoint{Instance: "web-1", Service: "web"}, network.Attachment{Network: "default"})
	g := newFakeGuest(t, nics[0])
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "guest saw %s", r.Host)
	})}
	go srv.Serve(g.listenTCP(t, 80))
	defer srv.Close()
	pc := g.listenUDP(t, 53)
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			pc.WriteTo(append([]byte("echo "), buf[:n]...), from)
		}
	}()

	ports, err := types.ParsePortConfig("127.0.0.1::80")
	if err != nil {
		t.Fatal(err)
	}
	udp, _ := types.ParsePortConfig("127.0.0.1::53/udp")
	all := types.ServicePortConfig{Target: 80, Protocol: "tcp"} // long syntax, no host_ip
	bs, err := m.Publish("web-1", append(append(ports, udp...), all))
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 3 || bs[0].HostIP != "127.0.0.1" || bs[0].HostPort == 0 || bs[1].Protocol != "udp" || bs[2].HostIP != "" || bs[0].Network != "default" {
		t.Fatalf("bindings %+v", bs)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(addr string) (string, error) {
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	local := fmt.Sprintf("127.0.0.1:%d", bs[0].HostPort)
	if body, err := get(local); err != nil || body != "guest saw "+local {
		t.Errorf("GET %s: %q, %v", local, body, err)
	}
	// 127.0.0.1 stays there: 127.0.0.2 (loopback too, on Linux) is not
	// bound; the all-addresses binding answers on it.
	other := fmt.Sprintf("127.0.0.2:%d", bs[0].HostPort)
	if _, err := get(other); err == nil {
		t.Errorf("a 127.0.0.1 binding answered on %s", other)
	}
	if runtime.GOOS == "linux" {
		wide := fmt.Sprintf("127.0.0.2:%d", bs[2].HostPort)
		if body, err := get(wide); err != nil || body != "guest saw "+wide {
			t.Errorf("GET %s (published on all addresses): %q, %v", wide, body, err)
		}
	}
	uc, err := net.Dial("udp", fmt.Sprintf("127.0.0.1:%d", bs[1].HostPort))
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	uc.SetDeadline(time.Now().Add(5 * time.Second))
	uc.Write([]byte("ping"))
	buf := make([]byte, 100)
	if n, err := uc.Read(buf); err != nil || string(buf[:n]) != "echo ping" {
		t.Errorf("UDP through the published port: %q, %v", buf[:n], err)
	}
	if got := m.Ports("web-1"); len(got) != 3 {
		t.Errorf("Ports: %+v", got)
	}

	// A taken port: held by a listener of ours.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	hp := held.Addr().(*net.TCPAddr).Port
	_, err = m.Publish("web-1", []types.ServicePortConfig{{HostIP: "127.0.0.1", Published: fmt.Sprint(hp), Target: 80, Protocol: "tcp"}})
	want := fmt.Sprintf(`service "web": publishing port 127.0.0.1:%d:80/tcp: port is already in use`, hp)
	if !errors.Is(err, network.ErrPortInUse) || err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("publishing a taken port: %v, want %s...", err, want)
	}
	// A failed Publish leaves nothing bound (it replaced the old ports).
	if got := m.Ports("web-1"); len(got) != 0 {
		t.Errorf("after a failed Publish: %+v", got)
	}
	if _, err := get(local); err == nil {
		t.Error("the replaced binding still answers")
	}
	// A range takes its first free port.
	bs, err = m.Publish("web-1", []types.ServicePortConfig{{HostIP: "127.0.0.1", Published: fmt.Sprintf("%d-%d", hp, hp+1), Target: 80}})
	if err != nil {
		t.Fatalf("publishing a range whose first port is taken: %v", err)
	}
	if bs[0].HostPort != uint16(hp+1) {
		t.Errorf("range binding %+v, want port %d", bs[0], hp+1)
	}
	m.Unpublish("web-1")
	if _, err := get(fmt.Sprintf("127.0.0.1:%d", hp+1)); err == nil {
		t.Error("an unpublished port still answers")
	}
}

// TestSpoofedMAC: frames whose source is not the NIC's own MAC are
// dropped, so a VM cannot speak as another instance: y, posing as x on
// its own socket, gets no connection through the gateway, while x does.
func TestSpoofedMAC(t *testing.T) {
	m, _ := newManager(t, network.NetworkConfig{Name: "default"})
	x := attach(t, m, network.Endpoint{Instance: "x-1", Service: "x", HostLoopback: true}, network.Attachment{Network: "default"})[0]
	y := attach(t, m, network.Endpoint{Instance: "y-1", Service: "y"}, network.Attachment{Network: "default"})[0]
	host, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	accepted := make(chan struct{}, 10)
	go func() {
		for {
			c, err := host.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			c.Close()
		}
	}()
	target := netip.AddrPortFrom(x.Gateway, uint16(host.Addr().(*net.TCPAddr).Port))

	posing := x
	posing.Socket = y.Socket
	spoof := newFakeGuest(t, posing)
	// The gateway's ARP answers would go to x: give the spoofer the
	// gateway's MAC, so only the switch stands in its way.
	spoof.knowGateway(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	if c, err := spoof.dialTCP(ctx, target); err == nil {
		c.Close()
	}
	cancel()
	select {
	case <-accepted:
		t.Error("a frame with another instance's MAC reached the gateway")
	case <-time.After(200 * time.Millisecond):
	}

	real := newFakeGuest(t, x)
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := real.dialTCP(ctx, target)
	if err != nil {
		t.Fatalf("x through its own socket: %v", err)
	}
	c.Close()
	select {
	case <-accepted:
	case <-time.After(5 * time.Second):
		t.Error("the host saw no connection from x")
	}
}

// TestReverseDNS: PTR queries for project addresses name the instance;
// addresses the querier cannot see are unknown.
func TestReverseDNS(t *testing.T) {
	m, res := newManager(t, network.NetworkConfig{Name: "a"}, network.NetworkConfig{Name: "b"})
	x := attach(t, m, network.Endpoint{Instance: "x-1", Service: "x"}, network.Attachment{Network: "a"})[0]
	y := attach(t, m, network.Endpoint{Instance: "y-1", Service: "y"}, network.Attachment{Network: "b"})[0]
	c := dnsConn(t, m, "a")
	for addr, want := range map[netip.Addr]string{
		x.Address.Addr(): "x-1.proj.internal.",
		y.Address.Addr(): "NXDOMAIN",
		x.Gateway:        "NXDOMAIN",
	} {
		name, _ := dns.ReverseAddr(addr.String())
		r := query(t, c, name, dns.TypePTR)
		got := dns.RcodeToString[r.Rcode]
		if len(r.Answer) == 1 {
			got = r.Answer[0].(*dns.PTR).Ptr
		}
		if got != want {
			t.Errorf("PTR %s: %s, want %s", addr, got, want)
		}
	}
	if len(res.names()) != 0 {
		t.Errorf("reverse lookups went upstream: %q", res.names())
	}
}

// TestClose: cancelling New's context closes the Manager: sockets go,
// Attach fails with ErrClosed.
func TestClose(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	m, err := network.New(ctx, network.Config{Project: "p", StateDir: shortDir(t), Networks: []network.NetworkConfig{{Name: "default"}}})
	if err != nil {
		t.Fatal(err)
	}
	nics := attach(t, m, network.Endpoint{Instance: "x-1"}, network.Attachment{Network: "default"})
	if _, err := os.Stat(nics[0].Socket); err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := m.Attach(network.Endpoint{Instance: "y-1"}, []network.Attachment{{Network: "default"}})
		if errors.Is(err, network.ErrClosed) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Attach after cancel: %v, want ErrClosed", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := os.Stat(nics[0].Socket); !os.IsNotExist(err) {
		t.Errorf("socket after Close: %v", err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
