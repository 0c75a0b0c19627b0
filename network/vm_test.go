//go:build linux

package network_test

// These tests boot real guests under QEMU (TCG here): the store's kernel,
// an initramfs with vminit, a busybox image as the root. Each guest's NIC
// joins its segment through the Manager's socket, configured statically
// from the NIC through the agent spec as the supervisor will do.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/internal/testenv"
	"github.com/vmcompose/vmcompose/internal/testimage"
	"github.com/vmcompose/vmcompose/network"
	"github.com/vmcompose/vmcompose/oci/rootfs"
	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/vm/initramfs"
	"github.com/vmcompose/vmcompose/vm/kernel/kerneltest"
	"github.com/vmcompose/vmcompose/vm/qemu"
	"github.com/vmcompose/vmcompose/vm/vmtest"
)

type guestFiles struct{ kernel, initrd, rootfs string }

var (
	filesOnce sync.Once
	files     guestFiles
	filesErr  error
)

func realGuest(t *testing.T) guestFiles {
	t.Helper()
	testenv.LookPath(t, "qemu-system-x86_64", "scripts/setup installs it")
	k := kerneltest.Kernel(t)
	img := testimage.Busybox(t)
	filesOnce.Do(func() {
		ctx := context.Background()
		cache := vmtest.CacheDir(t)
		bin := vmtest.GoBuild(t, "github.com/vmcompose/vmcompose/cmd/vminit", "vminit")
		initrd, err := initramfs.Build(ctx, k, bin, filepath.Join(cache, "initramfs"))
		if err != nil {
			filesErr = err
			return
		}
		root, _, err := rootfs.Ensure(ctx, img, filepath.Join(cache, "rootfs"))
		if err != nil {
			filesErr = err
			return
		}
		files = guestFiles{kernel: k.Image, initrd: initrd, rootfs: root}
	})
	if filesErr != nil {
		t.Fatal(filesErr)
	}
	return files
}

// guest is a booted service VM with its agent.
type guest struct {
	name string
	nics []network.NIC
	d    vm.Driver
	spec agent.Spec
	c    *agent.Client
}

// boot creates and starts a VM whose NICs are nics and starts its service
// with the NICs configured statically, as the supervisor will.
func boot(ctx context.Context, t *testing.T, d vm.Driver, f guestFiles, name string, nics []network.NIC, hostname string, command []string) (*guest, error) {
	spec := vm.Spec{
		Name:        name,
		VCPUs:       1,
		Memory:      256 << 20,
		Kernel:      f.kernel,
		Initramfs:   f.initrd,
		Cmdline:     []string{"quiet"},
		Disks:       []vm.Disk{{Path: f.rootfs, Serial: "rootfs", ReadOnly: true}},
		ScratchSize: 256 << 20,
	}
	gs := agent.Spec{Entrypoint: []string{"sh", "-c"}, Command: command, Hostname: hostname}
	for _, n := range nics {
		spec.Networks = append(spec.Networks, vm.Network{Socket: n.Socket, MAC: n.MAC})
		itf := agent.Interface{MAC: n.MAC, Addresses: []string{n.Address.String()}, MTU: n.MTU}
		if n.Default {
			itf.Gateway = n.Gateway.String()
		}
		gs.Networks = append(gs.Networks, itf)
	}
	gs.DNS = []string{nics[0].DNS.String()}
	gs.DNSSearch = nics[0].Search
	if err := d.Create(ctx, spec); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		d.Kill(context.Background(), name)
		d.Remove(context.Background(), name)
	})
	g := &guest{name: name, nics: nics, d: d, spec: gs}
	return g, g.start(ctx, t)
}

// start starts the VM and its service.
func (g *guest) start(ctx context.Context, t *testing.T) error {
	if err := g.d.Start(ctx, g.name); err != nil {
		return err
	}
	st, err := g.d.Inspect(ctx, g.name)
	if err != nil {
		return err
	}
	c, err := agent.DialSocket(ctx, st.Agent)
	if err != nil {
		return fmt.Errorf("%s: %w", g.name, err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Start(ctx, g.spec); err != nil {
		return fmt.Errorf("%s: starting the service: %w", g.name, err)
	}
	g.c = c
	return nil
}

// sh runs a shell script in the guest and returns its exit code and
// output (stdout and stderr together).
func (g *guest) sh(ctx context.Context, t *testing.T, script string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	p, err := g.c.Exec(ctx, agent.ExecSpec{Argv: []string{"sh", "-c", script}}, agent.ExecIO{Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatalf("%s: exec %q: %v", g.name, script, err)
	}
	st, err := p.Wait()
	if err != nil {
		t.Fatalf("%s: exec %q: %v", g.name, script, err)
	}
	return st.Code, out.String()
}

// TestGuests boots three guests: web (busybox httpd) and client on
// network front, lone on network other. The client gets its static lease
// by DHCP, resolves web by service name and alias, pings it, fetches its
// page; web, which opted in to the host's loopback, reaches a listener
// on the host's 127.0.0.1 through its gateway, the client, which did
// not, is refused there; lone can neither resolve nor reach web; the
// host fetches web's page through a published 127.0.0.1 port.
func TestGuests(t *testing.T) {
	f := realGuest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("/tmp", "vmc-net-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	m, err := network.New(ctx, network.Config{
		Project:  "proj",
		StateDir: filepath.Join(dir, "net"),
		Networks: []network.NetworkConfig{{Name: "front"}, {Name: "other"}},
		Resolver: &fakeResolver{}, // nothing leaves the machine
		Logger:   testLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	d, err := qemu.New(filepath.Join(dir, "vms"), qemu.WithLogger(testLogger()))
	if err != nil {
		t.Fatal(err)
	}

	host := httpServer(t, "hello from the host")
	_, hostPort, _ := net.SplitHostPort(host)

	webNICs, err := m.Attach(network.Endpoint{Instance: "web-1", Service: "web", Names: []string{"proj-web-1"}, HostLoopback: true},
		[]network.Attachment{{Network: "front", Aliases: []string{"site"}}})
	if err != nil {
		t.Fatal(err)
	}
	clientNICs, err := m.Attach(network.Endpoint{Instance: "client-1", Service: "client"}, []network.Attachment{{Network: "front"}, {Network: "other"}})
	if err != nil {
		t.Fatal(err)
	}
	loneNICs, err := m.Attach(network.Endpoint{Instance: "lone-1", Service: "lone"}, []network.Attachment{{Network: "other"}})
	if err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	type booted struct {
		g   *guest
		err error
	}
	var (
		wg              sync.WaitGroup
		web, cli, alone booted
	)
	for _, b := range []struct {
		out     *booted
		name    string
		nics    []network.NIC
		command string
	}{
		{&web, "web-1", webNICs, "mkdir -p /www && echo hello from web > /www/index.html && exec httpd -f -p 80 -h /www"},
		{&cli, "client-1", clientNICs, "exec sleep 3600"},
		{&alone, "lone-1", loneNICs, "exec sleep 3600"},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.out.g, b.out.err = boot(ctx, t, d, f, b.name, b.nics, b.name, []string{b.command})
		}()
	}
	wg.Wait()
	for _, b := range []booted{web, cli, alone} {
		if b.err != nil {
			t.Fatal(b.err)
		}
	}
	t.Logf("three guests booted and serving in %v", time.Since(t0).Round(time.Millisecond))
	webIP := webNICs[0].Address.Addr().String()

	t.Run("DHCP", func(t *testing.T) {
		script := `printf '#!/bin/sh\necho "$1 ip=$ip mask=$mask router=$router dns=$dns search=$search mtu=$mtu"\n' > /tmp/dhcp.sh
chmod +x /tmp/dhcp.sh
for i in /sys/class/net/*; do [ "$(cat $i/address)" = "$MAC" ] && udhcpc -i ${i##*/} -f -q -n -t 3 -T 1 -s /tmp/dhcp.sh 2>&1; done; exit 0`
		for _, n := range clientNICs {
			code, out := cli.g.sh(ctx, t, "MAC="+n.MAC+"\n"+script)
			want := fmt.Sprintf("bound ip=%s mask=24 router=%s dns=%s search=proj.internal mtu=1500", n.Address.Addr(), n.Gateway, n.DNS)
			if code != 0 || !strings.Contains(out, want) {
				t.Errorf("udhcpc on the NIC on %s: exit %d, output:\n%s\nwant a line %q", n.Network, code, out, want)
			}
		}
	})

	t.Run("names", func(t *testing.T) {
		for _, name := range []string{"web", "site", "web-1", "proj-web-1", "web.proj.internal"} {
			code, out := cli.g.sh(ctx, t, "nslookup "+name)
			if code != 0 || !strings.Contains(out, "Address: "+webIP) {
				t.Errorf("nslookup %s: exit %d:\n%s", name, code, out)
			}
		}
		if code, out := cli.g.sh(ctx, t, "ping -c1 -W5 site"); code != 0 {
			t.Errorf("ping site: exit %d:\n%s", code, out)
		}
		// client's second NIC is on other, with lone.
		loneIP := loneNICs[0].Address.Addr().String()
		if code, out := cli.g.sh(ctx, t, "nslookup lone"); code != 0 || !strings.Contains(out, "Address: "+loneIP) {
			t.Errorf("nslookup lone (on the second network): exit %d:\n%s", code, out)
		}
		if code, out := cli.g.sh(ctx, t, "ping -c1 -W5 lone-1"); code != 0 {
			t.Errorf("ping lone-1 (on the second network): exit %d:\n%s", code, out)
		}
		for _, url := range []string{"http://web/", "http://site/", "http://web-1.proj.internal/"} {
			code, out := cli.g.sh(ctx, t, "timeout 10 wget -q -O - "+url)
			if code != 0 || out != "hello from web\n" {
				t.Errorf("wget %s: exit %d: %q", url, code, out)
			}
		}
	})

	t.Run("host loopback", func(t *testing.T) {
		if code, out := cli.g.sh(ctx, t, "ping -c1 -W5 "+clientNICs[0].Gateway.String()); code != 0 {
			t.Errorf("ping the gateway: exit %d:\n%s", code, out)
		}
		for _, h := range []string{clientNICs[0].Gateway.String(), "host.docker.internal", "host.containers.internal"} {
			get := "timeout 10 wget -q -O - http://" + net.JoinHostPort(h, hostPort) + "/"
			if code, out := web.g.sh(ctx, t, get); code != 0 || out != "hello from the host" {
				t.Errorf("web (opted in): wget the host's 127.0.0.1:%s as %s: exit %d: %q", hostPort, h, code, out)
			}
			t1 := time.Now()
			if code, out := cli.g.sh(ctx, t, get); code == 0 || !strings.Contains(out, "Connection refused") {
				t.Errorf("client (not opted in): wget the host's 127.0.0.1:%s as %s: exit %d: %q; want connection refused", hostPort, h, code, out)
			} else if d := time.Since(t1); d > 5*time.Second {
				t.Errorf("client: the refusal took %v", d)
			}
		}
	})

	t.Run("isolation", func(t *testing.T) {
		if code, out := alone.g.sh(ctx, t, "nslookup web"); code == 0 || strings.Contains(out, webIP) {
			t.Errorf("lone resolved web: exit %d:\n%s", code, out)
		}
		t1 := time.Now()
		if code, out := alone.g.sh(ctx, t, "timeout 5 wget -q -O - http://"+webIP+"/"); code == 0 || strings.Contains(out, "hello") {
			t.Errorf("lone fetched web's page by address: exit %d: %q", code, out)
		}
		t.Logf("refused in %v", time.Since(t1).Round(time.Millisecond))
		if code, out := alone.g.sh(ctx, t, "ping -c1 -W2 "+webIP); code == 0 {
			t.Errorf("lone pinged web's address: exit %d:\n%s", code, out)
		}
	})

	// A VM restarted while the network lives connects to its socket again.
	t.Run("restart", func(t *testing.T) {
		t1 := time.Now()
		if err := d.Kill(ctx, "lone-1"); err != nil {
			t.Fatal(err)
		}
		alone.g.c.Close()
		if err := alone.g.start(ctx, t); err != nil {
			t.Fatal(err)
		}
		t.Logf("lone-1 restarted in %v", time.Since(t1).Round(time.Millisecond))
		if code, out := alone.g.sh(ctx, t, "ping -c1 -W5 "+loneNICs[0].Gateway.String()+" && nslookup client"); code != 0 || !strings.Contains(out, "Address: "+clientNICs[1].Address.Addr().String()) {
			t.Errorf("after a restart: exit %d:\n%s", code, out)
		}
	})

	t.Run("published", func(t *testing.T) {
		ports, err := types.ParsePortConfig("127.0.0.1::80")
		if err != nil {
			t.Fatal(err)
		}
		bs, err := m.Publish("web-1", ports)
		if err != nil {
			t.Fatal(err)
		}
		url := fmt.Sprintf("http://127.0.0.1:%d/", bs[0].HostPort)
		t1 := time.Now()
		client := &http.Client{Timeout: 10 * time.Second}
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "hello from web\n" {
			t.Errorf("GET %s: %q", url, b)
		}
		t.Logf("GET through the published port took %v", time.Since(t1).Round(time.Millisecond))
	})
}

func httpServer(t *testing.T, body string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, body) })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

func testLogger() *slog.Logger {
	if testing.Verbose() && os.Getenv("VMCOMPOSE_TEST_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}
