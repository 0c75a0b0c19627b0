package netproc_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/unixsock"
	"github.com/vmcompose/vmcompose/network"
	"github.com/vmcompose/vmcompose/network/netproc"
	"github.com/vmcompose/vmcompose/network/netproc/netproctest"
)

func webRecord() *netproc.Record {
	return &netproc.Record{
		Project:     "proj",
		Endpoint:    network.Endpoint{Instance: "web-1", Service: "web"},
		Attachments: []network.Attachment{{Network: "default"}},
		Networks:    []network.NetworkConfig{{Name: "default", Subnet: "10.77.0.0/24"}},
	}
}

// TestNetworkProcess: the network process is started on the first attach
// and outlives its client's Close while an instance is attached; Attached
// tells a known instance; after the last detach Close ends it and its
// socket; a client starts a new one when it went away.
func TestNetworkProcess(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	n, starts, ended := netproctest.InProcess(dir)

	rec := webRecord()
	if ok, err := n.Attached(ctx, "web-1", rec); ok || err != nil {
		t.Fatalf("Attached with no network process: %v, %v", ok, err)
	}
	if starts.Load() != 0 {
		t.Fatalf("Attached started a network process")
	}
	if err := n.Reattach(ctx, "web-1", rec); err != nil {
		t.Fatal(err)
	}
	if starts.Load() != 1 {
		t.Errorf("starts: %d, want 1", starts.Load())
	}
	nics, err := n.NICsOf(ctx, "web-1")
	if err != nil || len(nics) != 1 ||
		nics[0].Address.Addr() != netip.MustParseAddr("10.77.0.2") || !fileExistsT(nics[0].Socket) {
		t.Fatalf("NICs of web-1: %+v, %v", nics, err)
	}
	rec.Attachments[0].MAC, rec.Attachments[0].IP = nics[0].MAC, nics[0].Address.Addr()
	if ok, err := n.Attached(ctx, "web-1", rec); !ok || err != nil {
		t.Errorf("Attached(web-1): %v, %v", ok, err)
	}
	other := *rec
	other.Attachments = []network.Attachment{{Network: "default", MAC: nics[0].MAC, IP: netip.MustParseAddr("10.77.0.9")}}
	if ok, _ := n.Attached(ctx, "web-1", &other); ok {
		t.Errorf("Attached(web-1) with another address: true")
	}

	// The supervisor goes; the network stays for web-1.
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	next, _, _ := netproctest.InProcess(dir)
	p, err := next.Ping(ctx)
	if err != nil || strings.Join(p.Instances, ",") != "web-1" || p.Protocol != netproc.Protocol {
		t.Fatalf("ping after Close with web-1 attached: %+v, %v", p, err)
	}
	if ok, err := next.Attached(ctx, "web-1", rec); !ok || err != nil {
		t.Errorf("Attached(web-1) for the next supervisor: %v, %v", ok, err)
	}
	// An address taken is the network's error, passed on.
	taken := webRecord()
	taken.Endpoint.Instance = "web-2"
	taken.Attachments[0].IP = netip.MustParseAddr("10.77.0.2")
	if err := next.Reattach(ctx, "web-2", taken); err == nil || !strings.Contains(err.Error(), "10.77.0.2") {
		t.Errorf("attaching web-2 on web-1's address: %v", err)
	}

	if err := next.Detach("web-1"); err != nil {
		t.Fatal(err)
	}
	if !fileExistsT(netproc.SocketPath(dir)) {
		t.Fatal("no socket before Close")
	}
	if err := next.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("network process: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the network process did not exit after Close with nothing attached")
	}
	if fileExistsT(netproc.SocketPath(dir)) || fileExistsT(nics[0].Socket) {
		t.Errorf("sockets left after the network process exited")
	}
	if err := next.Detach("web-1"); err != nil {
		t.Errorf("Detach with no network process: %v", err)
	}

	// A client whose network process went away starts another.
	if err := n.Reattach(ctx, "web-1", rec); err != nil {
		t.Fatal(err)
	}
	if starts.Load() != 2 {
		t.Errorf("starts: %d, want 2", starts.Load())
	}
	n.Detach("web-1")
	n.Close()
	<-ended
}

// TestNetworkProcessOtherProtocol: a network process that answers with
// another protocol is asked to quit and replaced.
func TestNetworkProcessOtherProtocol(t *testing.T) {
	dir := t.TempDir()
	l, err := unixsock.Listen(dir, netproc.SocketName)
	if err != nil {
		t.Fatal(err)
	}
	quit := make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ping", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(netproc.Ping{Pid: 1, Protocol: netproc.Protocol + 1, Version: "future"})
	})
	mux.HandleFunc("POST /quit", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(netproc.QuitRequest{Quitting: true})
		os.Remove(netproc.SocketPath(dir))
		close(quit)
		go l.Close()
	})
	go http.Serve(l, mux)
	n, starts, ended := netproctest.InProcess(dir)
	if err := n.Reattach(context.Background(), "web-1", webRecord()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-quit:
	default:
		t.Error("the network process of another protocol was not asked to quit")
	}
	if starts.Load() != 1 {
		t.Errorf("starts: %d, want 1", starts.Load())
	}
	n.Detach("web-1")
	n.Close()
	<-ended
}

// TestNetworkProcessIdleExit: a network process with nothing attached
// exits after IdleExit; a second one cannot run beside it.
func TestNetworkProcessIdleExit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	ns := netproc.NewServer(dir, nil)
	ns.IdleExit = 200 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- ns.Run(context.Background()) }()
	deadline := time.Now().Add(5 * time.Second)
	for !fileExistsT(netproc.SocketPath(dir)) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	second := netproc.NewServer(dir, nil)
	second.LockWait = 50 * time.Millisecond
	if err := second.Run(context.Background()); !errors.Is(err, netproc.ErrRunning) {
		t.Errorf("a second network process: %v, want netproc.ErrRunning", err)
	}
	n := netproc.NewNetworks(dir, nil, nil)
	if _, err := n.Ping(context.Background()); err != nil {
		t.Errorf("ping through a socket path of %d bytes: %v", len(netproc.SocketPath(dir)), err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("an idle network process did not exit")
	}
	if fileExistsT(netproc.SocketPath(dir)) {
		t.Error("socket left")
	}
}

func fileExistsT(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
