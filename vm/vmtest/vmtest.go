//go:build linux

package vmtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/vm"
)

// Fixtures are what the suite needs besides the backend's code.
type Fixtures struct {
	// Kernel and Initramfs boot the test guest: Initramfs must have
	// testinit as /init (see Initramfs).
	Kernel    string
	Initramfs string

	// NewDriver opens the backend on state root, with shutdown as its
	// guest shutdown hook (vm.GuestShutdownFunc; nil for none). The suite
	// opens several drivers on one root to check adoption.
	NewDriver func(t testing.TB, root string, shutdown vm.GuestShutdownFunc) vm.Driver

	// ProcessName is a substring of the VMM process's command line
	// (e.g. "qemu-system") used to find VMM processes the suite leaked.
	// Empty for in-process backends.
	ProcessName string

	// Shares says the backend serves vm.Spec.Shares on this host; the
	// share checks are skipped otherwise.
	Shares bool
	// ShareProcessName is a substring of the command line of the helper
	// processes that serve shares (e.g. "virtiofsd"), which must not
	// outlive their VM. Empty when the backend has none.
	ShareProcessName string

	// Service, when set, adds the checks that need a real service guest
	// (vminit and the agent): the writable layer across stop, start and
	// recreate, and Stop through the agent.
	Service *Service

	// BootTimeout bounds one boot of the test guest to its first console
	// line (default 60 s: TCG on a loaded 2-core machine).
	BootTimeout time.Duration
}

// Environment of the re-executed test binary that starts a VM and dies.
const (
	envOrphanRoot = "VMTEST_ORPHAN_ROOT"
	envOrphanSpec = "VMTEST_ORPHAN_SPEC"
	envOrphanDie  = "VMTEST_ORPHAN_DIE"
)

// Run runs the conformance suite against a backend. Call it from a
// top-level test function: the adoption checks re-execute the test binary
// with -test.run set to that function, and Run then plays the controlling
// process that starts a VM and dies.
func Run(t *testing.T, fx Fixtures) {
	if root := os.Getenv(envOrphanRoot); root != "" {
		orphan(t, fx, root)
		return
	}
	if fx.BootTimeout == 0 {
		fx.BootTimeout = 60 * time.Second
	}
	root := t.TempDir()
	s := &suite{fx: fx, root: root, d: fx.NewDriver(t, root, nil)}
	t.Cleanup(func() { s.noLeaks(t) })

	t.Run("Errors", s.errors)
	t.Run("Lifecycle", s.lifecycle)
	t.Run("ExitByItself", s.exit)
	t.Run("StopEscalates", s.stopEscalates)
	t.Run("GuestShutdownHook", s.guestShutdown)
	t.Run("SharedReadOnlyDisk", s.sharedDisk)
	t.Run("AdoptAfterControllerDied", s.adopt)
	t.Run("DieWithController", s.dieWithController)
	t.Run("CancelledStart", s.cancelledStart)
	t.Run("KillCutsStopShort", s.killDuringStop)
	t.Run("Concurrent", s.concurrent)
	t.Run("Shares", s.shares)
	t.Run("SharesEndWithVM", s.sharesEndWithVM)
	t.Run("AdoptShares", s.adoptShares)
	t.Run("ServiceWritableLayer", s.serviceLayer)
}

type suite struct {
	fx   Fixtures
	root string
	d    vm.Driver
}

func (s *suite) spec(name, mode string, extra ...string) vm.Spec {
	return vm.Spec{
		Name:      name,
		VCPUs:     1,
		Memory:    128 << 20,
		Kernel:    s.fx.Kernel,
		Initramfs: s.fx.Initramfs,
		Cmdline:   append([]string{"quiet", "vmtest.mode=" + mode}, extra...),
	}
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func (s *suite) errors(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	d := s.d
	for _, bad := range []vm.Spec{
		{Name: "", Kernel: s.fx.Kernel},
		{Name: "../up", Kernel: s.fx.Kernel},
		{Name: "nokernel"},
		{Name: "dupserial", Kernel: s.fx.Kernel, Disks: []vm.Disk{{Path: "/a", Serial: "x"}, {Path: "/b", Serial: "x"}}},
		{Name: "scratchserial", Kernel: s.fx.Kernel, ScratchSize: 64 << 20, Disks: []vm.Disk{{Path: "/a", Serial: vm.ScratchSerial}}},
		{Name: "badtag", Kernel: s.fx.Kernel, Shares: []vm.Share{{Tag: "a,b", Source: "/a"}}},
		{Name: "duptag", Kernel: s.fx.Kernel, Shares: []vm.Share{{Tag: "x", Source: "/a"}, {Tag: "x", Source: "/b"}}},
		{Name: "relshare", Kernel: s.fx.Kernel, Shares: []vm.Share{{Tag: "x", Source: "src"}}},
	} {
		if err := d.Create(ctx, bad); err == nil {
			t.Errorf("Create(%+v) = nil, want an error", bad)
		}
	}
	if _, err := d.Inspect(ctx, "missing"); !errors.Is(err, vm.ErrNotFound) {
		t.Errorf("Inspect(missing) = %v, want ErrNotFound", err)
	}
	if err := d.Start(ctx, "missing"); !errors.Is(err, vm.ErrNotFound) {
		t.Errorf("Start(missing) = %v, want ErrNotFound", err)
	}
	if err := d.Stop(ctx, "missing", time.Second); !errors.Is(err, vm.ErrNotFound) {
		t.Errorf("Stop(missing) = %v, want ErrNotFound", err)
	}
	if err := d.Kill(ctx, "missing"); !errors.Is(err, vm.ErrNotFound) {
		t.Errorf("Kill(missing) = %v, want ErrNotFound", err)
	}
	if err := d.Remove(ctx, "missing"); err != nil {
		t.Errorf("Remove(missing) = %v, want nil", err)
	}
	if err := d.Create(ctx, s.spec("twice", "exit")); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(ctx, s.spec("twice", "wait")); !errors.Is(err, vm.ErrExists) {
		t.Errorf("second Create = %v, want ErrExists", err)
	}
	st := s.inspect(t, "twice")
	if st.State != vm.StateCreated || st.Pid != 0 || !st.StartedAt.IsZero() {
		t.Errorf("new VM: %+v, want state created, no pid, no start time", st)
	}
	if err := d.Stop(ctx, "twice", time.Second); err != nil {
		t.Errorf("Stop of a created VM = %v, want nil", err)
	}
	if err := d.Kill(ctx, "twice"); err != nil {
		t.Errorf("Kill of a created VM = %v, want nil", err)
	}
	if err := d.Remove(ctx, "twice"); err != nil {
		t.Fatal(err)
	}
	// A disk that does not exist fails at Start, naming the disk.
	sp := s.spec("nodisk", "exit")
	sp.Disks = []vm.Disk{{Path: filepath.Join(s.root, "absent.img"), Serial: "data", ReadOnly: true}}
	if err := d.Create(ctx, sp); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, "nodisk"); err == nil || !strings.Contains(err.Error(), "nodisk") {
		t.Errorf("Start with a missing disk = %v, want an error naming the VM", err)
	}
	if st := s.inspect(t, "nodisk"); st.State == vm.StateRunning {
		t.Errorf("VM with a missing disk: %+v, want it not running", st)
	}
	if err := d.Remove(ctx, "nodisk"); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) lifecycle(t *testing.T) {
	ctx := ctxT(t, 5*time.Minute)
	d := s.d
	sp := s.spec("life", "wait", "vmtest.scratch=1")
	sp.ScratchSize = 64 << 20
	if err := d.Create(ctx, sp); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Kill(context.Background(), "life") })

	t0 := time.Now()
	if err := d.Start(ctx, "life"); err != nil {
		t.Fatal(err)
	}
	t.Logf("Start returned after %v", time.Since(t0))
	st := s.inspect(t, "life")
	if st.State != vm.StateRunning || st.Pid == 0 && s.fx.ProcessName != "" || st.StartedAt.IsZero() {
		t.Fatalf("after Start: %+v, want running with a pid and a start time", st)
	}
	if err := d.Start(ctx, "life"); err != nil {
		t.Errorf("Start of a running VM = %v, want nil", err)
	}
	if st2 := s.inspect(t, "life"); st2.Pid != st.Pid || !st2.StartedAt.Equal(st.StartedAt) {
		t.Errorf("Start of a running VM restarted it: %+v, then %+v", st, st2)
	}
	s.waitConsole(t, st.Console, "vmtest: boots=1", 1)
	s.waitConsole(t, st.Console, "vmtest: waiting", 1)
	t.Logf("guest booted after %v", time.Since(t0))
	if err := d.Remove(ctx, "life"); !errors.Is(err, vm.ErrRunning) {
		t.Errorf("Remove of a running VM = %v, want ErrRunning", err)
	}

	t1 := time.Now()
	if err := d.Stop(ctx, "life", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("Stop (ACPI) took %v", time.Since(t1))
	s.waitConsole(t, st.Console, "vmtest: poweroff reason=acpi", 1)
	st = s.inspect(t, "life")
	if st.State != vm.StateExited || st.FinishedAt.IsZero() || st.FinishedAt.Before(st.StartedAt) {
		t.Errorf("after Stop: %+v, want exited with a finish time after the start", st)
	}
	if err := d.Stop(ctx, "life", time.Second); err != nil {
		t.Errorf("Stop of a stopped VM = %v, want nil", err)
	}
	if err := d.Kill(ctx, "life"); err != nil {
		t.Errorf("Kill of a stopped VM = %v, want nil", err)
	}

	// The writable layer survives stop and start.
	if err := d.Start(ctx, "life"); err != nil {
		t.Fatal(err)
	}
	s.waitConsole(t, st.Console, "vmtest: boots=2", 1)
	s.waitConsole(t, st.Console, "vmtest: waiting", 2)
	if err := d.Kill(ctx, "life"); err != nil {
		t.Fatal(err)
	}
	if st := s.inspect(t, "life"); st.State != vm.StateExited {
		t.Errorf("after Kill: %+v, want exited", st)
	}
	if err := d.Kill(ctx, "life"); err != nil {
		t.Errorf("second Kill = %v, want nil", err)
	}

	// Recreating discards it.
	if err := d.Remove(ctx, "life"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Inspect(ctx, "life"); !errors.Is(err, vm.ErrNotFound) {
		t.Errorf("Inspect after Remove = %v, want ErrNotFound", err)
	}
	if err := d.Remove(ctx, "life"); err != nil {
		t.Errorf("second Remove = %v, want nil", err)
	}
	sp.Cmdline = s.spec("life", "exit", "vmtest.scratch=1").Cmdline
	if err := d.Create(ctx, sp); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, "life"); err != nil {
		t.Fatal(err)
	}
	st = s.wait(t, "life")
	if n := countLines(st.Console, "vmtest: boots=1"); n != 1 || countLines(st.Console, "vmtest: boots=3") != 0 {
		b, _ := os.ReadFile(st.Console)
		t.Errorf("recreated VM did not boot on a fresh scratch disk:\n%s", tail(b, 2000))
	}
	if err := d.Remove(ctx, "life"); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) exit(t *testing.T) {
	ctx := ctxT(t, 2*time.Minute)
	if err := s.d.Create(ctx, s.spec("exit", "exit")); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := s.d.Start(ctx, "exit"); err != nil {
		t.Fatal(err)
	}
	st := s.wait(t, "exit")
	t.Logf("boot to power-off: %v", time.Since(t0))
	if st.State != vm.StateExited || st.FinishedAt.IsZero() {
		t.Errorf("after the guest powered off: %+v, want exited with a finish time", st)
	}
	if n := countLines(st.Console, "vmtest: poweroff reason=exit"); n != 1 {
		t.Errorf("console log has %d power-off lines, want 1", n)
	}
	if err := s.d.Remove(ctx, "exit"); err != nil {
		t.Fatal(err)
	}
}

// stopEscalates: a guest that ignores the power button is stopped all the
// same, within the timeout plus the backend's own hard stop.
func (s *suite) stopEscalates(t *testing.T) {
	ctx := ctxT(t, 2*time.Minute)
	if err := s.d.Create(ctx, s.spec("stubborn", "wait", "vmtest.ignore=acpi")); err != nil {
		t.Fatal(err)
	}
	if err := s.d.Start(ctx, "stubborn"); err != nil {
		t.Fatal(err)
	}
	st := s.inspect(t, "stubborn")
	s.waitConsole(t, st.Console, "vmtest: waiting", 1)
	t0 := time.Now()
	const timeout = 2 * time.Second
	if err := s.d.Stop(ctx, "stubborn", timeout); err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	t.Logf("Stop of a guest ignoring ACPI took %v", took)
	if took < timeout || took > timeout+15*time.Second {
		t.Errorf("Stop took %v, want between the timeout %v and %v", took, timeout, timeout+15*time.Second)
	}
	if countLines(st.Console, "vmtest: power button ignored") == 0 {
		t.Errorf("the guest never saw the power button (console %s)", st.Console)
	}
	if st := s.inspect(t, "stubborn"); st.State != vm.StateExited {
		t.Errorf("after Stop: %+v, want exited", st)
	}
	if err := s.d.Remove(ctx, "stubborn"); err != nil {
		t.Fatal(err)
	}
}

// guestShutdown: the shutdown hook comes first, and ACPI is not needed
// when it works.
func (s *suite) guestShutdown(t *testing.T) {
	ctx := ctxT(t, 2*time.Minute)
	called := make(chan string, 1)
	d := s.fx.NewDriver(t, s.root, func(ctx context.Context, name, agent string) error {
		called <- name
		return lineShutdown(ctx, agent)
	})
	if err := d.Create(ctx, s.spec("hooked", "wait", "vmtest.ignore=acpi")); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, "hooked"); err != nil {
		t.Fatal(err)
	}
	st := s.inspect(t, "hooked")
	s.waitConsole(t, st.Console, "vmtest: waiting", 1)
	if err := d.Stop(ctx, "hooked", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-called:
		if n != "hooked" {
			t.Errorf("hook called for %q, want %q", n, "hooked")
		}
	default:
		t.Error("Stop did not call the guest shutdown hook")
	}
	if countLines(st.Console, "vmtest: poweroff reason=agent") != 1 {
		t.Errorf("the guest did not power off through the agent port (console %s)", st.Console)
	}
	if err := d.Remove(ctx, "hooked"); err != nil {
		t.Fatal(err)
	}
}

// lineShutdown speaks testinit's agent protocol: "shutdown\n", "ok\n".
func lineShutdown(ctx context.Context, agent string) error {
	var dl net.Dialer
	c, err := dl.DialContext(ctx, "unix", agent)
	if err != nil {
		return err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if _, err := c.Write([]byte("shutdown\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if strings.TrimSpace(line) != "ok" {
		return fmt.Errorf("agent answered %q", line)
	}
	return nil
}

// sharedDisk: two running VMs share one read-only disk.
func (s *suite) sharedDisk(t *testing.T) {
	ctx := ctxT(t, 3*time.Minute)
	img := filepath.Join(t.TempDir(), "shared.img")
	if err := vm.CreateScratch(ctx, img, 16<<20); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"share1", "share2"} {
		sp := s.spec(n, "wait")
		sp.Disks = []vm.Disk{{Path: img, Serial: "shared", ReadOnly: true}}
		if err := s.d.Create(ctx, sp); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.d.Kill(context.Background(), n) })
		if err := s.d.Start(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{"share1", "share2"} {
		st := s.inspect(t, n)
		if st.State != vm.StateRunning {
			t.Errorf("%s: %+v, want running", n, st)
		}
		s.waitConsole(t, st.Console, "vmtest: waiting", 1)
	}
	for _, n := range []string{"share1", "share2"} {
		if err := s.d.Kill(ctx, n); err != nil {
			t.Fatal(err)
		}
		if err := s.d.Remove(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
}

// adopt: a VM whose controlling process died keeps running and a new
// driver on the same root takes it over.
func (s *suite) adopt(t *testing.T) {
	ctx := ctxT(t, 2*time.Minute)
	sp := s.spec("orphan", "wait", "vmtest.scratch=1")
	sp.ScratchSize = 32 << 20
	s.startOrphan(t, sp, false)
	d := s.fx.NewDriver(t, s.root, nil)
	t.Cleanup(func() { d.Kill(context.Background(), "orphan") })
	st, err := d.Inspect(ctx, "orphan")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != vm.StateRunning {
		t.Fatalf("VM of a dead controller: %+v, want running (adoptable)", st)
	}
	s.waitConsole(t, st.Console, "vmtest: waiting", 1)
	if l, ok := d.(vm.Lister); ok {
		all, err := l.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, v := range all {
			found = found || v.Name == "orphan" && v.State == vm.StateRunning
		}
		if !found {
			t.Errorf("List = %+v, want the running orphan in it", all)
		}
	}
	if err := d.Stop(ctx, "orphan", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if st := s.inspect(t, "orphan"); st.State != vm.StateExited {
		t.Errorf("adopted VM after Stop: %+v, want exited", st)
	}
	if countLines(st.Console, "vmtest: poweroff reason=acpi") != 1 {
		t.Errorf("adopted VM did not power off by ACPI (console %s)", st.Console)
	}
	// It starts again under the new driver, scratch disk intact.
	if err := d.Start(ctx, "orphan"); err != nil {
		t.Fatal(err)
	}
	s.waitConsole(t, st.Console, "vmtest: boots=2", 1)
	if err := d.Kill(ctx, "orphan"); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(ctx, "orphan"); err != nil {
		t.Fatal(err)
	}
}

// dieWithController: a VM started with DieWithController ends with the
// process that started it.
func (s *suite) dieWithController(t *testing.T) {
	sp := s.spec("tied", "wait")
	sp.DieWithController = true
	s.startOrphan(t, sp, true)
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := s.inspect(t, "tied")
		if st.State == vm.StateExited {
			break
		}
		if time.Now().After(deadline) {
			s.d.Kill(context.Background(), "tied")
			t.Fatalf("VM tied to a dead controller: %+v after 10s, want exited", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := s.d.Remove(ctxT(t, time.Minute), "tied"); err != nil {
		t.Fatal(err)
	}
}

// killDuringStop: Kill ends a VM while a Stop waits for its guest, and
// both return.
func (s *suite) killDuringStop(t *testing.T) {
	ctx := ctxT(t, 2*time.Minute)
	if err := s.d.Create(ctx, s.spec("slow", "wait", "vmtest.ignore=acpi")); err != nil {
		t.Fatal(err)
	}
	if err := s.d.Start(ctx, "slow"); err != nil {
		t.Fatal(err)
	}
	st := s.inspect(t, "slow")
	s.waitConsole(t, st.Console, "vmtest: waiting", 1)
	stopped := make(chan error, 1)
	t0 := time.Now()
	go func() { stopped <- s.d.Stop(ctx, "slow", time.Minute) }()
	time.Sleep(500 * time.Millisecond)
	if err := s.d.Kill(ctx, "slow"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-stopped:
		if err != nil {
			t.Errorf("Stop cut short by Kill = %v, want nil", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Stop still waiting 15s after Kill")
	}
	t.Logf("Stop returned %v after it began", time.Since(t0))
	if st := s.inspect(t, "slow"); st.State != vm.StateExited {
		t.Errorf("after Kill: %+v, want exited", st)
	}
	if err := s.d.Remove(ctx, "slow"); err != nil {
		t.Fatal(err)
	}
}

// concurrent: VMs created, started, stopped and removed from several
// goroutines at once.
func (s *suite) concurrent(t *testing.T) {
	ctx := ctxT(t, 3*time.Minute)
	names := []string{"c1", "c2", "c3"}
	errs := make(chan error, len(names))
	for _, n := range names {
		go func() {
			errs <- func() error {
				sp := s.spec(n, "wait", "vmtest.scratch=1")
				sp.ScratchSize = 16 << 20
				if err := s.d.Create(ctx, sp); err != nil {
					return err
				}
				if err := s.d.Start(ctx, n); err != nil {
					return err
				}
				st, err := s.d.Inspect(ctx, n)
				if err != nil {
					return err
				}
				deadline := time.Now().Add(s.fx.BootTimeout)
				for countLines(st.Console, "vmtest: waiting") == 0 {
					if time.Now().After(deadline) {
						return fmt.Errorf("VM %s did not boot", n)
					}
					time.Sleep(20 * time.Millisecond)
				}
				if err := s.d.Stop(ctx, n, 30*time.Second); err != nil {
					return err
				}
				if countLines(st.Console, "vmtest: poweroff reason=acpi") != 1 {
					return fmt.Errorf("VM %s did not power off by ACPI", n)
				}
				return s.d.Remove(ctx, n)
			}()
		}()
	}
	for range names {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	for _, n := range names {
		s.d.Kill(context.Background(), n)
		s.d.Remove(context.Background(), n)
	}
}

func (s *suite) cancelledStart(t *testing.T) {
	ctx := ctxT(t, time.Minute)
	if err := s.d.Create(ctx, s.spec("cancel", "wait")); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.d.Start(cctx, "cancel"); err == nil {
		// Allowed to have started before it looked at ctx, but then the
		// VM must be known and stoppable.
		if st := s.inspect(t, "cancel"); st.State != vm.StateRunning {
			t.Errorf("Start with a cancelled context returned nil but the VM is %s", st.State)
		}
	}
	if err := s.d.Kill(ctx, "cancel"); err != nil {
		t.Fatal(err)
	}
	if err := s.d.Remove(ctx, "cancel"); err != nil {
		t.Fatal(err)
	}
}

// startOrphan re-executes the test binary, which creates and starts sp on
// the suite's root and exits without stopping it.
func (s *suite) startOrphan(t *testing.T, sp vm.Spec, die bool) {
	t.Helper()
	b, err := jsonMarshal(sp)
	if err != nil {
		t.Fatal(err)
	}
	top := strings.SplitN(t.Name(), "/", 2)[0]
	cmd := exec.Command(os.Args[0], "-test.run=^"+top+"$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), envOrphanRoot+"="+s.root, envOrphanSpec+"="+string(b))
	if die {
		cmd.Env = append(cmd.Env, envOrphanDie+"=1")
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("controlling process: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "vmtest: orphan started") {
		t.Fatalf("controlling process did not start the VM:\n%s", out)
	}
}

// orphan is the re-executed controller: start the VM, then exit at once.
func orphan(t *testing.T, fx Fixtures, root string) {
	var sp vm.Spec
	if err := jsonUnmarshal([]byte(os.Getenv(envOrphanSpec)), &sp); err != nil {
		t.Fatal(err)
	}
	ctx := ctxT(t, time.Minute)
	d := fx.NewDriver(t, root, nil)
	if err := d.Create(ctx, sp); err != nil {
		t.Fatal(err)
	}
	if err := d.Start(ctx, sp.Name); err != nil {
		t.Fatal(err)
	}
	fmt.Println("vmtest: orphan started")
	os.Exit(0) // no cleanup: the VM must outlive us, or die with us
}

func (s *suite) inspect(t testing.TB, name string) vm.Status {
	t.Helper()
	st, err := s.d.Inspect(ctxT(t, 30*time.Second), name)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func (s *suite) wait(t testing.TB, name string) vm.Status {
	t.Helper()
	st, err := vm.Wait(ctxT(t, s.fx.BootTimeout+30*time.Second), s.d, name)
	if err != nil {
		s.d.Kill(context.Background(), name)
		t.Fatal(err)
	}
	return st
}

// waitConsole waits until the console log holds line at least n times.
func (s *suite) waitConsole(t testing.TB, path, line string, n int) {
	t.Helper()
	deadline := time.Now().Add(s.fx.BootTimeout)
	for countLines(path, line) < n {
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(path)
			t.Fatalf("no %q (x%d) in the console after %v:\n%s", line, n, s.fx.BootTimeout, tail(b, 3000))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func countLines(path, line string) int {
	b, _ := os.ReadFile(path)
	n := 0
	for l := range strings.Lines(string(b)) {
		if strings.TrimRight(l, "\r\n") == line {
			n++
		}
	}
	return n
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// noLeaks kills what the suite left running and fails if any VMM process
// still has its working directory or a path under the suite's root.
func (s *suite) noLeaks(t *testing.T) {
	if l, ok := s.d.(vm.Lister); ok {
		all, _ := l.List(context.Background())
		for _, st := range all {
			if st.State == vm.StateRunning {
				t.Errorf("VM %s still running after the suite", st.Name)
				s.d.Kill(context.Background(), st.Name)
			}
		}
	}
	if s.fx.ProcessName == "" {
		return
	}
	if pids := Processes(s.fx.ProcessName, s.root); len(pids) > 0 {
		t.Errorf("VMM processes left under %s: %v", s.root, pids)
	}
	if s.fx.ShareProcessName == "" {
		return
	}
	if pids := Processes(s.fx.ShareProcessName, s.root); len(pids) > 0 {
		t.Errorf("share helper processes left under %s: %v", s.root, pids)
	}
}
