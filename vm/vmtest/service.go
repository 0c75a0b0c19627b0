//go:build linux

package vmtest

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/vm"
)

// Service is a real service guest: vminit in the initramfs and an image's
// read-only root file system (serial "rootfs") holding a POSIX shell.
type Service struct {
	Kernel    string
	Initramfs string // with vminit as /init
	Rootfs    string
}

// agents holds the agent connections of the service VMs the suite runs,
// so that the driver's guest shutdown hook can use them, as the supervisor
// will.
type agents struct {
	mu sync.Mutex
	c  map[string]*agent.Client
}

func (a *agents) set(name string, c *agent.Client) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.c == nil {
		a.c = map[string]*agent.Client{}
	}
	if old := a.c[name]; old != nil {
		old.Close()
	}
	a.c[name] = c
}

func (a *agents) shutdown(ctx context.Context, name, _ string) error {
	a.mu.Lock()
	c := a.c[name]
	a.mu.Unlock()
	if c == nil {
		return fmt.Errorf("no agent connection to VM %s", name)
	}
	_, err := c.Shutdown(ctx)
	return err
}

// counter is the service of the writable-layer check: it counts its runs
// in a file of the overlay root, whose upper layer is the scratch disk.
const counter = `n=$(cat /var/lib/runs 2>/dev/null || echo 0); n=$((n+1)); mkdir -p /var/lib; echo $n > /var/lib/runs; sync; echo runs=$n`

// serviceLayer checks with vminit that the writable layer survives stop
// and start and is discarded on recreate, and that Stop goes through the
// guest shutdown hook.
func (s *suite) serviceLayer(t *testing.T) {
	svc := s.fx.Service
	if svc == nil {
		t.Skip("no service guest in the fixtures")
	}
	ctx := ctxT(t, 5*time.Minute)
	var ag agents
	d := s.fx.NewDriver(t, s.root, ag.shutdown)
	spec := vm.Spec{
		Name: "svc", VCPUs: 1, Memory: 256 << 20,
		Kernel: svc.Kernel, Initramfs: svc.Initramfs,
		Disks:       []vm.Disk{{Path: svc.Rootfs, Serial: "rootfs", ReadOnly: true}},
		ScratchSize: 256 << 20,
	}
	if err := d.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Kill(context.Background(), "svc") })

	// run boots the VM, runs argv and returns its stdout once the guest
	// has powered off by itself.
	run := func(argv ...string) string {
		t.Helper()
		t0 := time.Now()
		if err := d.Start(ctx, "svc"); err != nil {
			t.Fatal(err)
		}
		st, err := d.Inspect(ctx, "svc")
		if err != nil {
			t.Fatal(err)
		}
		c, err := agent.DialSocket(ctx, st.Agent)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		out, _, err := c.Attach(ctx, agent.Stdout, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx, agent.Spec{Command: argv}); err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(out)
		if exit, err := c.Wait(ctx); err != nil || exit.Code != 0 {
			t.Fatalf("service %q: %+v, %v; stdout %q", argv, exit, err, b)
		}
		if st, err := vm.Wait(ctx, d, "svc"); err != nil || st.State != vm.StateExited {
			t.Fatalf("VM after its service exited: %+v, %v", st, err)
		}
		t.Logf("%v: %q in %v", argv, b, time.Since(t0).Round(time.Millisecond))
		return strings.TrimSpace(string(b))
	}
	if got := run("sh", "-c", counter); got != "runs=1" {
		t.Errorf("first run: %q, want runs=1", got)
	}
	if got := run("sh", "-c", counter); got != "runs=2" {
		t.Errorf("after stop and start: %q, want runs=2 (the writable layer must survive)", got)
	}

	// A long-running service is stopped through the hook: vminit stops
	// the service and powers off, no ACPI or kill needed.
	if err := d.Start(ctx, "svc"); err != nil {
		t.Fatal(err)
	}
	st, _ := d.Inspect(ctx, "svc")
	c, err := agent.DialSocket(ctx, st.Agent)
	if err != nil {
		t.Fatal(err)
	}
	ag.set("svc", c)
	if err := c.Start(ctx, agent.Spec{Command: []string{"sh", "-c", counter + "; exec sleep 3600"}}); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := d.Stop(ctx, "svc", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took > 15*time.Second {
		t.Errorf("Stop through the agent took %v", took)
	}
	c.Close()

	// Without the hook, the ACPI power button reaches vminit, which stops
	// the service the same way: Stop ends well before its timeout would
	// escalate to a hard stop.
	plain := s.fx.NewDriver(t, s.root, nil)
	if err := plain.Start(ctx, "svc"); err != nil {
		t.Fatal(err)
	}
	st, _ = plain.Inspect(ctx, "svc")
	c, err = agent.DialSocket(ctx, st.Agent)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx, agent.Spec{Command: []string{"sh", "-c", counter + "; exec sleep 3600"}}); err != nil {
		t.Fatal(err)
	}
	exited := make(chan agent.ExitStatus, 1)
	go func() {
		e, _ := c.Wait(ctx)
		exited <- e
	}()
	t0 = time.Now()
	const acpiTimeout = 30 * time.Second
	if err := plain.Stop(ctx, "svc", acpiTimeout); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(t0); took > acpiTimeout/2 {
		t.Errorf("Stop through the ACPI power button took %v: the guest did not act on it", took)
	}
	select {
	case e := <-exited:
		if e.Signal != "SIGTERM" {
			t.Errorf("service stopped by the power button: %+v, want SIGTERM", e)
		}
	case <-time.After(5 * time.Second):
		t.Error("no exit status from a service stopped by the power button")
	}
	c.Close()

	// Recreating discards the layer.
	if err := d.Remove(ctx, "svc"); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(ctx, spec); err != nil {
		t.Fatal(err)
	}
	if got := run("sh", "-c", counter); got != "runs=1" {
		t.Errorf("after recreate: %q, want runs=1 (a new writable layer)", got)
	}
	if err := d.Remove(ctx, "svc"); err != nil {
		t.Fatal(err)
	}
}
