package netproc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/internal/flock"
	"github.com/vmcompose/vmcompose/network"
)

// networkDirEnv makes the test binary a network process of the state dir
// it names (see TestMain), so that tests kill a real process.
const networkDirEnv = "VMCOMPOSE_TEST_NETWORK_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(networkDirEnv); dir != "" {
		ns := NewServer(dir, slog.New(slog.NewTextHandler(os.Stderr, nil)))
		ns.Version = "test"
		ns.IdleExit = time.Minute
		err := ns.Run(context.Background())
		if err != nil && !errors.Is(err, ErrRunning) {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// processNetworks returns a Networks whose Start starts this test binary
// as the network process of dir, detached as the CLI starts it.
func processNetworks(t *testing.T, dir string) *Networks {
	var n *Networks
	n = NewNetworks(dir, slog.New(slog.NewTextHandler(testWriter{t}, nil)), func(ctx context.Context) (*Child, error) {
		logf, err := os.OpenFile(filepath.Join(dir, LogName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		defer logf.Close()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), networkDirEnv+"="+dir)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		if err := cmd.Start(); err != nil {
			return nil, err
		}
		status := make(chan error, 1)
		go func() { status <- cmd.Wait() }()
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if _, err := n.Ping(ctx); err == nil {
				return &Child{Pid: cmd.Process.Pid, Exited: status}, nil
			}
		}
		cmd.Process.Kill()
		return nil, errors.New("the network process did not answer within 30s")
	})
	t.Cleanup(func() {
		n.Release()
		for _, pid := range waitNetworkProcs(dir, 0) {
			t.Errorf("network process %d left running", pid)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	return n
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

// networkProcs lists the live network processes of dir.
func networkProcs(dir string) []int {
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if err != nil || !slices.ContainsFunc(bytes.Split(env, []byte{0}), func(v []byte) bool { return string(v) == networkDirEnv+"="+dir }) {
			continue
		}
		if stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
			if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) > 0 && f[0] == "Z" {
				continue
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

// waitNetworkProcs waits up to 10 s for dir to have want network
// processes and returns those it has.
func waitNetworkProcs(dir string, want int) []int {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := networkProcs(dir)
		if len(pids) == want || time.Now().After(deadline) {
			return pids
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listening reports whether something accepts TCP connections at addr.
func listening(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func freeTCPPort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func record(instance, service, ip string, port int) *Record {
	rec := &Record{
		Project:     "proj",
		Endpoint:    network.Endpoint{Instance: instance, Service: service},
		Attachments: []network.Attachment{{Network: "default", IP: netip.MustParseAddr(ip)}},
		Networks:    []network.NetworkConfig{{Name: "default", Subnet: "10.77.0.0/24"}},
	}
	if port != 0 {
		rec.Ports = []types.ServicePortConfig{{HostIP: "127.0.0.1", Published: strconv.Itoa(port), Target: 80, Protocol: "tcp"}}
	}
	return rec
}

// TestNetworkProcessKilled: when the network process is killed, Watch
// reports it with its exit status and the instances that were attached,
// and a new process runs with them attached again, with their addresses
// and published ports; one network process runs, never two. A Networks
// that did not start the process (a later supervisor's) notices its end
// too, without an exit status.
func TestNetworkProcessKilled(t *testing.T) {
	dir := t.TempDir()
	n := processNetworks(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lost := make(chan Loss, 4)
	go n.Watch(ctx, func(l Loss) { lost <- l })

	port := freeTCPPort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	if err := n.Reattach(ctx, "web-1", record("web-1", "web", "10.77.0.10", port)); err != nil {
		t.Fatal(err)
	}
	if err := n.Reattach(ctx, "db-1", record("db-1", "db", "10.77.0.11", 0)); err != nil {
		t.Fatal(err)
	}
	first, err := n.Ping(ctx)
	if err != nil || !listening(addr) {
		t.Fatalf("after attaching: ping %v, %v; port %s listening: %v", first, err, addr, listening(addr))
	}

	killed := time.Now()
	syscall.Kill(first.Pid, syscall.SIGKILL)
	var l Loss
	select {
	case l = <-lost:
	case <-time.After(30 * time.Second):
		t.Fatal("the killed network process was not reported")
	}
	t.Logf("network process killed: reported after %s, with a new process and the instances attached", time.Since(killed).Round(time.Millisecond))
	if l.Pid != first.Pid || l.Status != "signal: killed" || strings.Join(l.Instances, ",") != "db-1,web-1" {
		t.Errorf("loss: %+v; want pid %d, signal: killed, db-1 and web-1", l, first.Pid)
	}
	second, err := n.Ping(ctx)
	if err != nil || second.Pid == first.Pid || strings.Join(second.Instances, ",") != "db-1,web-1" {
		t.Fatalf("after the loss: ping %+v, %v; want a new process with db-1 and web-1", second, err)
	}
	if !listening(addr) {
		t.Errorf("published port %s does not listen again", addr)
	}
	web := record("web-1", "web", "10.77.0.10", port)
	web.Attachments[0].MAC = macOf(t, n, "web-1")
	if ok, err := n.Attached(ctx, "web-1", web); !ok || err != nil {
		t.Errorf("web-1 on the new process with its address: %v, %v", ok, err)
	}
	if pids := waitNetworkProcs(dir, 1); len(pids) != 1 || pids[0] != second.Pid {
		t.Errorf("network processes: %v, want only %d", pids, second.Pid)
	}
	if _, ok, _ := flock.TryLock(filepath.Join(dir, LockName)); ok {
		t.Error("nobody holds the network lock")
	}
	select {
	case l := <-lost:
		t.Errorf("a second loss reported: %+v", l)
	default:
	}

	// A later supervisor adopts the running process; the first one is
	// gone. It notices the end of a process it did not start.
	cancel()
	later := processNetworks(t, dir)
	lctx, lcancel := context.WithCancel(context.Background())
	defer lcancel()
	lost2 := make(chan Loss, 4)
	go later.Watch(lctx, func(l Loss) { lost2 <- l })
	for _, rec := range []*Record{record("web-1", "web", "10.77.0.10", port), record("db-1", "db", "10.77.0.11", 0)} {
		rec.Attachments[0].MAC = macOf(t, later, rec.Endpoint.Instance)
		if ok, err := later.Attached(lctx, rec.Endpoint.Instance, rec); !ok || err != nil {
			t.Fatalf("adopting %s: %v, %v", rec.Endpoint.Instance, ok, err)
		}
	}
	syscall.Kill(second.Pid, syscall.SIGKILL)
	select {
	case l = <-lost2:
	case <-time.After(30 * time.Second):
		t.Fatal("the adopted network process's end was not reported")
	}
	if l.Pid != second.Pid || !strings.HasPrefix(l.Status, "unknown") || strings.Join(l.Instances, ",") != "db-1,web-1" {
		t.Errorf("loss of the adopted process: %+v", l)
	}
	third, err := later.Ping(lctx)
	if err != nil || third.Pid == second.Pid || strings.Join(third.Instances, ",") != "db-1,web-1" || !listening(addr) {
		t.Errorf("after the adopted process died: ping %+v, %v; port listening %v", third, err, listening(addr))
	}

	// Asked to exit, it is no loss.
	later.Release()
	if pids := waitNetworkProcs(dir, 0); len(pids) != 0 {
		t.Errorf("network processes after Release: %v", pids)
	}
	select {
	case l := <-lost2:
		t.Errorf("Release reported as a loss: %+v", l)
	case <-time.After(time.Second):
	}
}

// macOf returns the MAC the network process gave the instance.
func macOf(t *testing.T, n *Networks, instance string) string {
	var nics []network.NIC
	if err := n.do(context.Background(), "GET", "/instances/"+instance, nil, &nics); err != nil || len(nics) != 1 {
		t.Fatalf("NICs of %s: %v, %v", instance, nics, err)
	}
	return nics[0].MAC
}

// TestNetworkErrorsAcrossProcess: an error the network process answers
// keeps its message and matches the network package's sentinel with
// errors.Is.
func TestNetworkErrorsAcrossProcess(t *testing.T) {
	dir := t.TempDir()
	n := processNetworks(t, dir)
	ctx := context.Background()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port

	err = n.Reattach(ctx, "web-1", record("web-1", "web", "10.77.0.10", port))
	if !errors.Is(err, network.ErrPortInUse) {
		t.Errorf("publishing a taken port: %v; want it to match network.ErrPortInUse", err)
	}
	if err == nil || !strings.Contains(err.Error(), `service "web"`) || !strings.Contains(err.Error(), strconv.Itoa(port)) || !strings.Contains(err.Error(), "free it or publish another port") {
		t.Errorf("publishing a taken port: %v; want the service, the port and the fix", err)
	}
	if errors.Is(err, network.ErrUnknownNetwork) {
		t.Errorf("%v matches ErrUnknownNetwork too", err)
	}

	other := record("db-1", "db", "10.77.0.11", 0)
	other.Attachments[0].Network = "backend"
	err = n.Reattach(ctx, "db-1", other)
	if !errors.Is(err, network.ErrUnknownNetwork) || !strings.Contains(err.Error(), `"backend"`) {
		t.Errorf("attaching to a network the project lacks: %v; want ErrUnknownNetwork naming it", err)
	}
	if errors.Is(err, network.ErrPortInUse) {
		t.Errorf("%v matches ErrPortInUse too", err)
	}
}
