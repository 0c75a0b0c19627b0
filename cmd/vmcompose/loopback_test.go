package main_test

import (
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

// TestHostLoopback: a service VM cannot reach a server on the host's
// 127.0.0.1 through its gateway address, host.docker.internal or
// host.containers.internal: the connection is refused. A service with
// x-vm.host_loopback reaches it by all three, under up and under run.
func TestHostLoopback(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	dir := filepath.Join(p.home, "loopback")
	p.cleanup(dir)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello from the host") })}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())

	compose := `services:
  shut:
    image: ` + ref + `
    command: ["sleep", "1000"]
  open:
    image: ` + ref + `
    command: ["sleep", "1000"]
    x-vm: {host_loopback: true}
`
	start := time.Now()
	if _, stderr, code := p.in(dir, compose, "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up: exit %d: %s", code, stderr)
	}
	t.Logf("up of two services: %s", time.Since(start).Round(time.Millisecond))
	// The gateway is the default route's; busybox's route prints it.
	gw, stderr, code := p.in(dir, "", "exec", "-T", "shut", "sh", "-c", "ip route | awk '/^default/ {print $3}'")
	gw = strings.TrimSpace(gw)
	if code != 0 || net.ParseIP(gw) == nil {
		t.Fatalf("the guest's gateway: exit %d, %q, %s", code, gw, stderr)
	}
	for _, h := range []string{gw, "host.docker.internal", "host.containers.internal"} {
		get := "timeout 10 wget -q -O - http://" + net.JoinHostPort(h, port) + "/ 2>&1"
		t1 := time.Now()
		out, stderr, code := p.in(dir, "", "exec", "-T", "shut", "sh", "-c", get)
		if code == 0 || !strings.Contains(out, "Connection refused") {
			t.Errorf("shut fetching the host's 127.0.0.1:%s as %s: exit %d, %q, %s; want connection refused", port, h, code, out, stderr)
		} else {
			t.Logf("shut refused by %s: exec took %s", h, time.Since(t1).Round(time.Millisecond))
		}
		if out, stderr, code := p.in(dir, "", "exec", "-T", "open", "sh", "-c", get); code != 0 || out != "hello from the host" {
			t.Errorf("open (x-vm.host_loopback) fetching the host's 127.0.0.1:%s as %s: exit %d, %q, %s", port, h, code, out, stderr)
		}
	}
	// A one-off VM of the services gets the same.
	get := "timeout 10 wget -q -O - http://host.docker.internal:" + port + "/ 2>&1"
	if out, stderr, code := p.in(dir, "", "run", "--rm", "--no-deps", "shut", "sh", "-c", get); code == 0 || !strings.Contains(out, "Connection refused") {
		t.Errorf("run shut: exit %d, %q, %s; want connection refused", code, out, stderr)
	}
	if out, stderr, code := p.in(dir, "", "run", "--rm", "--no-deps", "open", "sh", "-c", get); code != 0 || out != "hello from the host" {
		t.Errorf("run open: exit %d, %q, %s", code, out, stderr)
	}
}
