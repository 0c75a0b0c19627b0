//go:build linux

package qemu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/internal/atomicfile"
	"github.com/vmcompose/vmcompose/vm"
)

var (
	_ vm.Driver     = (*Driver)(nil)
	_ vm.Waiter     = (*Driver)(nil)
	_ vm.Lister     = (*Driver)(nil)
	_ vm.SpecReader = (*Driver)(nil)
)

// Timeouts of the steps that do not depend on the caller's stop timeout.
const (
	startTimeout = 10 * time.Second // qemu up to its QMP socket listening
	quitTimeout  = 3 * time.Second  // QMP quit before SIGKILL
)

type options struct {
	templates string // where templates are kept; "" boots every VM cold
	binary    string
	virtiofsd string
	accel     string
	tbSize    int
	shutdown  vm.GuestShutdownFunc
	log       *slog.Logger
}

// Option configures a Driver.
type Option func(*options) error

// WithBinary sets the qemu-system executable (default
// qemu-system-x86_64 from PATH).
func WithBinary(path string) Option {
	return func(o *options) error {
		if path == "" {
			return errors.New("qemu binary: empty path")
		}
		o.binary = path
		return nil
	}
}

// WithVirtiofsd sets the virtiofs daemon that serves a VM's shares
// (default DefaultVirtiofsd). It must take the options of QEMU's C daemon
// (--fd, -o source=, -o cache=, -o sandbox=).
func WithVirtiofsd(path string) Option {
	return func(o *options) error {
		if !filepath.IsAbs(path) {
			return fmt.Errorf("virtiofsd %q: want an absolute path", path)
		}
		o.virtiofsd = path
		return nil
	}
}

// WithAccel forces an accelerator: AccelKVM or AccelTCG. The default,
// AccelAuto, uses KVM when a trial boot shows that it works, else TCG, and
// honours VMCOMPOSE_ACCEL.
func WithAccel(accel string) Option {
	return func(o *options) error {
		switch accel {
		case AccelAuto, AccelKVM, AccelTCG:
			o.accel = accel
			return nil
		}
		return fmt.Errorf("accelerator %q: want %q, %q or empty for automatic", accel, AccelKVM, AccelTCG)
	}
}

// WithTBSize sets TCG's translation cache in MiB. The default, 64, holds
// all the code a service VM's boot translates; 32 saves ~15 MB of RSS per
// VM but flushes the cache during boot and costs ~5% more CPU (measured on
// a 2-core TCG host); 0 means QEMU's own default (up to 1 GiB, filled
// on demand).
func WithTBSize(mib int) Option {
	return func(o *options) error {
		if mib < 0 || mib > 4096 {
			return fmt.Errorf("TCG translation cache size %d MiB: want 0 (QEMU's default) to 4096", mib)
		}
		o.tbSize = mib
		return nil
	}
}

// WithGuestShutdown sets the first step of Stop: asking the guest, through
// whoever holds its agent connection, to shut down.
func WithGuestShutdown(f vm.GuestShutdownFunc) Option {
	return func(o *options) error {
		o.shutdown = f
		return nil
	}
}

// WithLogger sets the logger; the driver is silent by default.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("logger: nil")
		}
		o.log = l
		return nil
	}
}

// Driver runs VMs as qemu processes. See the package comment for the state
// it keeps.
type Driver struct {
	root    string
	o       options
	sandbox bool // qemu has -sandbox (built with seccomp)

	accelMu  sync.Mutex
	accelVal string // decided accelerator, "" until then

	mu       sync.Mutex
	children map[string]*child // qemu processes this Driver started
}

// child is a qemu process started by this Driver, waited for by a
// goroutine locked to the thread that forked it (PR_SET_PDEATHSIG fires
// when that thread ends, not the process).
type child struct {
	pid    int
	start  uint64
	reaped chan struct{} // closed once its exit is recorded
	done   chan struct{} // closed once its virtiofsd processes ended too
}

// New returns a driver whose VMs live under root, which it creates.
func New(root string, opts ...Option) (*Driver, error) {
	o := options{binary: "qemu-system-x86_64", virtiofsd: DefaultVirtiofsd, tbSize: 64, log: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("qemu driver: %w", err)
		}
	}
	bin, err := exec.LookPath(o.binary)
	if err != nil {
		return nil, fmt.Errorf("qemu driver: %w (install qemu-system-x86)", err)
	}
	o.binary = bin
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("qemu driver: state root: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("qemu driver: state root: %w", err)
	}
	// qemu's working directory, as /proc shows it, has no symlinks.
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	if os.Getenv(TemplatesEnv) == "0" {
		o.templates = ""
	}
	removeStale(abs, o.log)
	d := &Driver{root: abs, o: o, sandbox: hasSandbox(bin), children: map[string]*child{}}
	d.reapOrphanDaemons()
	return d, nil
}

var sandboxes sync.Map // qemu binary -> bool

// hasSandbox reports whether qemu lists -sandbox in its help, which it
// does when built with seccomp.
func hasSandbox(bin string) bool {
	if v, ok := sandboxes.Load(bin); ok {
		return v.(bool)
	}
	out, _ := exec.Command(bin, "-help").Output()
	has := bytes.Contains(out, []byte("\n-sandbox "))
	sandboxes.Store(bin, has)
	return has
}

// staleAge is how old a half-made or half-removed VM directory must be
// before New deletes it: a younger one may belong to a Create or Remove
// running in another process.
const staleAge = 10 * time.Minute

// removeStale deletes what a Create or Remove that died left behind.
func removeStale(root string, log *slog.Logger) {
	ents, _ := os.ReadDir(root)
	for _, e := range ents {
		n := e.Name()
		if !e.IsDir() || !strings.HasPrefix(n, ".") || !(strings.Contains(n, ".creating-") || strings.Contains(n, ".removing-")) {
			continue
		}
		if fi, err := e.Info(); err == nil && time.Since(fi.ModTime()) > staleAge {
			log.Debug("removing stale VM directory", "dir", n)
			os.RemoveAll(filepath.Join(root, n))
		}
	}
}

// Root is the driver's state root.
func (d *Driver) Root() string { return d.root }

// run is run.json: one start of a VM.
type run struct {
	Pid       int       `json:"pid"`
	PidStart  uint64    `json:"pid_start"` // /proc/<pid>/stat field 22
	BootID    string    `json:"boot_id"`
	Accel     string    `json:"accel"`
	StartedAt time.Time `json:"started_at"`
	Args      []string  `json:"args"`
}

// exit is exit.json: the end of the run with the same pid and start time.
type exit struct {
	Pid        int       `json:"pid"`
	PidStart   uint64    `json:"pid_start"`
	FinishedAt time.Time `json:"finished_at"`
	Signal     int       `json:"signal,omitempty"` // what killed qemu, when the Driver that reaped it saw one
}

func (d *Driver) dir(name string) string { return filepath.Join(d.root, name) }

func (d *Driver) path(name, file string) string { return filepath.Join(d.root, name, file) }

// Create implements vm.Driver.
func (d *Driver) Create(ctx context.Context, spec vm.Spec) (err error) {
	if err := spec.Validate(); err != nil {
		return err
	}
	devices := len(spec.Disks) + len(spec.Networks) + len(spec.Shares)
	if spec.ScratchSize > 0 {
		devices++
	}
	if devices > maxDevices {
		return fmt.Errorf("creating VM %s: %d disks, NICs and shares: QEMU's microvm machine has room for %d", spec.Name, devices, maxDevices)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("creating VM %s: %w", spec.Name, err)
	}
	if _, err := os.Stat(d.dir(spec.Name)); err == nil {
		return fmt.Errorf("creating VM %s: %w", spec.Name, vm.ErrExists)
	}
	// Lay the VM out in a hidden directory and rename it into place, so a
	// VM directory is either complete or absent.
	tmp, err := os.MkdirTemp(d.root, "."+spec.Name+".creating-")
	if err != nil {
		return fmt.Errorf("creating VM %s: %w", spec.Name, err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(tmp)
		}
	}()
	if spec.ScratchSize > 0 {
		if err := vm.CreateScratch(ctx, filepath.Join(tmp, scratchFile), spec.ScratchSize); err != nil {
			return fmt.Errorf("creating VM %s: %w", spec.Name, err)
		}
	}
	if err := writeJSON(filepath.Join(tmp, specFile), spec); err != nil {
		return fmt.Errorf("creating VM %s: %w", spec.Name, err)
	}
	if err := os.Rename(tmp, d.dir(spec.Name)); err != nil {
		if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
			return fmt.Errorf("creating VM %s: %w", spec.Name, vm.ErrExists)
		}
		return fmt.Errorf("creating VM %s: %w", spec.Name, err)
	}
	atomicfile.SyncDir(d.root) // best effort: the VM directory is complete either way
	d.o.log.Debug("VM created", "vm", spec.Name, "dir", d.dir(spec.Name))
	return nil
}

// Spec implements vm.SpecReader.
func (d *Driver) Spec(_ context.Context, name string) (vm.Spec, error) { return d.readSpec(name) }

// readSpec returns the VM's spec, or an error wrapping vm.ErrNotFound.
func (d *Driver) readSpec(name string) (vm.Spec, error) {
	var spec vm.Spec
	if !validName(name) {
		return spec, fmt.Errorf("VM %s: %w", name, vm.ErrNotFound)
	}
	if err := readJSON(d.path(name, specFile), &spec); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return spec, fmt.Errorf("VM %s: %w", name, vm.ErrNotFound)
		}
		return spec, fmt.Errorf("VM %s: %w", name, err)
	}
	return spec, nil
}

func validName(name string) bool {
	return (vm.Spec{Name: name, Kernel: "x"}).Validate() == nil
}

// current returns the VM's last run and whether its qemu still runs.
func (d *Driver) current(name string) (run, bool, error) {
	var r run
	err := readJSON(d.path(name, runFile), &r)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return r, false, fmt.Errorf("VM %s: %w", name, err)
	}
	// A start time means nothing across a host reboot.
	if err == nil && r.BootID == bootID() && alive(r.Pid, r.PidStart) {
		return r, true, nil
	}
	// A Start that died between spawning qemu and recording it left a
	// qemu that only its pidfile knows: adopt it, so that it is neither
	// leaked nor joined by a second qemu on the same disks.
	if lost, ok := d.fromPidfile(name); ok {
		d.o.log.Warn("adopting an unrecorded qemu", "vm", name, "pid", lost.Pid)
		if err := writeJSON(d.path(name, runFile), lost); err != nil {
			return r, false, fmt.Errorf("VM %s: recording its process: %w", name, err)
		}
		return lost, true, nil
	}
	return r, false, nil
}

// fromPidfile returns the run of the qemu named in the VM's pidfile, if
// that process lives, works in the VM's directory and carries its name.
func (d *Driver) fromPidfile(name string) (run, bool) {
	b, err := os.ReadFile(d.path(name, pidFile))
	if err != nil {
		return run{}, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return run{}, false
	}
	start, zombie, err := procStart(pid)
	if err != nil || zombie {
		return run{}, false
	}
	proc := "/proc/" + strconv.Itoa(pid)
	if cwd, err := os.Readlink(proc + "/cwd"); err != nil || cwd != d.dir(name) {
		return run{}, false
	}
	cmdline, err := os.ReadFile(proc + "/cmdline")
	if err != nil || !bytes.Contains(cmdline, []byte("\x00vmcompose:"+name+"\x00")) {
		return run{}, false
	}
	args := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
	accel := AccelTCG
	if slices.Contains(args, "kvm") {
		accel = AccelKVM
	}
	return run{Pid: pid, PidStart: start, BootID: bootID(), Accel: accel, StartedAt: time.Now().UTC(), Args: args[1:]}, true
}

// Start implements vm.Driver.
func (d *Driver) Start(ctx context.Context, name string) error {
	spec, err := d.readSpec(name)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("starting VM %s: %w", name, err)
	}
	unlock, err := d.lock(ctx, name)
	if err != nil {
		return fmt.Errorf("starting VM %s: %w", name, err)
	}
	defer unlock()
	d.finishRestore(ctx, name)
	if _, running, err := d.current(name); err != nil {
		return err
	} else if running {
		return nil
	}
	for _, disk := range spec.Disks {
		if _, err := os.Stat(disk.Path); err != nil {
			return fmt.Errorf("starting VM %s: disk %s: %w", name, disk.Serial, err)
		}
	}
	// QEMU 7.2's stream netdev neither fails nor retries when nothing
	// listens: check that the network's socket is there at least.
	for i, n := range spec.Networks {
		fi, err := os.Stat(n.Socket)
		if err == nil && fi.Mode()&fs.ModeSocket == 0 {
			err = errors.New("not a unix socket")
		}
		if err != nil {
			return fmt.Errorf("starting VM %s: network %d (%s): %w (start the network first)", name, i, n.Socket, err)
		}
	}
	if err := d.checkShares(spec); err != nil {
		return fmt.Errorf("starting VM %s: %w", name, err)
	}
	// A previous qemu of ours that ended may not be reaped yet: let its
	// goroutine finish before the files are reused.
	d.mu.Lock()
	old := d.children[name]
	d.mu.Unlock()
	if old != nil {
		select {
		case <-old.done:
		case <-ctx.Done():
			return fmt.Errorf("starting VM %s: %w", name, ctx.Err())
		}
	}
	accel := d.accel(ctx, spec.Kernel)
	if t := d.template(ctx, spec, accel); t != nil {
		err := d.launch(ctx, name, spec, accel, t)
		if err == nil || ctx.Err() != nil {
			return err
		}
		// A template that does not restore is dropped: the next VM
		// builds a new one, this one boots cold.
		d.o.log.Warn("restoring from a template failed: booting cold", "vm", name, "template", t.snap, "err", err)
		t.remove()
	}
	return d.launch(ctx, name, spec, accel, nil)
}

// launch starts qemu for the VM, restoring it from t when t is not nil,
// and returns once qemu got through its set-up (its QMP socket answers;
// a restored VM runs).
func (d *Driver) launch(ctx context.Context, name string, spec vm.Spec, accel string, t *template) error {
	dir := d.dir(name)
	var extra []*os.File
	var args []string
	if t == nil {
		args = d.args(spec, accel, nil)
	} else {
		snap, err := os.Open(t.snap)
		if err != nil {
			return err
		}
		defer snap.Close()
		extra = append(extra, snap)
		args = append(d.args(restoreSpec(spec, t), accel, &memoryFile{path: t.ram}), "-incoming", "defer")
	}
	for _, f := range []string{qmpSock, agentSock, pidFile, restoringFile} {
		os.Remove(filepath.Join(dir, f))
	}
	if t != nil {
		// Until qemu runs, it waits for the commands that load the
		// template (see finishRestore).
		if err := os.WriteFile(filepath.Join(dir, restoringFile), nil, 0o644); err != nil {
			return fmt.Errorf("starting VM %s: %w", name, err)
		}
	}
	rotate(consolePath(dir, spec), maxConsoleLog)
	logf, err := os.OpenFile(filepath.Join(dir, qemuLog), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("starting VM %s: %w", name, err)
	}
	defer logf.Close()

	shares := len(spec.Shares) > 0
	if shares {
		// Daemons left by a Start that died before its qemu ran wait
		// for a connection for ever; the lock keeps other Starts out.
		d.reapDaemons(dir, 0, 0)
		vlog, err := os.OpenFile(filepath.Join(dir, virtiofsdLog), os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("starting VM %s: %w", name, err)
		}
		err = d.startDaemons(dir, spec, vlog)
		vlog.Close()
		if err != nil {
			d.reapDaemons(dir, 0, 0)
			return fmt.Errorf("starting VM %s: %w", name, err)
		}
	}
	c, err := d.spawn(dir, args, logf, spec.DieWithController, shares, extra...)
	if err != nil {
		if shares {
			d.reapDaemons(dir, 0, 0)
		}
		return fmt.Errorf("starting VM %s: %w", name, err)
	}
	r := run{Pid: c.pid, PidStart: c.start, BootID: bootID(), Accel: accel, StartedAt: time.Now().UTC(), Args: args}
	if err := writeJSON(filepath.Join(dir, runFile), r); err != nil {
		unix.Kill(c.pid, unix.SIGKILL)
		<-c.done
		return fmt.Errorf("starting VM %s: recording its process: %w", name, err)
	}
	d.o.log.Debug("VM starting", "vm", name, "pid", c.pid, "accel", accel, "restored", t != nil)

	// Started means qemu got through its set-up: the QMP socket answers.
	wctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	fail := func(err error) error {
		unix.Kill(c.pid, unix.SIGKILL)
		<-c.done
		return fmt.Errorf("starting VM %s: %w", name, err)
	}
	for {
		q, err := dialQMP(wctx, filepath.Join(dir, qmpSock))
		if err == nil {
			defer q.close()
			if t != nil {
				if err := restoreIncoming(wctx, q); err != nil {
					return fail(err)
				}
				os.Remove(filepath.Join(dir, restoringFile))
			}
			return nil
		}
		select {
		case <-c.done:
			b, _ := os.ReadFile(filepath.Join(dir, qemuLog))
			if path, ok := lockFailure(b); ok {
				return fmt.Errorf("starting VM %s: %w", name, &vm.DiskInUseError{Path: path})
			}
			why := lastLine(b)
			if v, _ := os.ReadFile(filepath.Join(dir, virtiofsdLog)); shares && len(v) > 0 {
				why += " (virtiofsd: " + lastLine(v) + ")"
			}
			return fmt.Errorf("starting VM %s: qemu exited: %s", name, why)
		case <-wctx.Done():
			return fail(fmt.Errorf("waiting for qemu's QMP socket: %w", wctx.Err()))
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// args returns qemu's arguments for spec with this driver's settings.
func (d *Driver) args(spec vm.Spec, accel string, memFile *memoryFile) []string {
	return buildArgs(spec, accel, tscKHz(), d.o.tbSize, d.sandbox, memFile)
}

// spawn starts qemu in dir and returns once its pid and start time are
// known. A goroutine locked to the forking thread reaps it, marks the
// run's end and, for a VM with shares, sees its virtiofsd processes end.
// extra are open files qemu gets as fd 3 and up.
func (d *Driver) spawn(dir string, args []string, logf *os.File, dieWithController, shares bool, extra ...*os.File) (*child, error) {
	type result struct {
		c   *child
		err error
	}
	res := make(chan result, 1)
	go func() {
		// PR_SET_PDEATHSIG fires when the thread that forked the child
		// ends: keep this goroutine on its thread until qemu is reaped.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		cmd := exec.Command(d.o.binary, args...)
		cmd.Dir = dir
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.ExtraFiles = extra
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if dieWithController {
			cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
		}
		if err := cmd.Start(); err != nil {
			res <- result{err: err}
			return
		}
		start, _, err := procStart(cmd.Process.Pid)
		if err != nil {
			cmd.Process.Kill()
			cmd.Wait()
			res <- result{err: fmt.Errorf("reading qemu's start time: %w", err)}
			return
		}
		c := &child{pid: cmd.Process.Pid, start: start, reaped: make(chan struct{}), done: make(chan struct{})}
		d.mu.Lock()
		d.children[filepath.Base(dir)] = c
		d.mu.Unlock()
		res <- result{c: c}
		cmd.Wait()
		markExit(dir, c.pid, c.start, killedBy(cmd.ProcessState))
		close(c.reaped)
		if shares {
			d.reapDaemons(dir, c.start, virtiofsdGrace)
		}
		close(c.done)
		d.mu.Lock()
		if d.children[filepath.Base(dir)] == c {
			delete(d.children, filepath.Base(dir))
		}
		d.mu.Unlock()
	}()
	r := <-res
	return r.c, r.err
}

// markExit records the end of the run of pid/start, unless recorded, and
// the signal that ended it when the reaper saw one: another process (or
// Inspect) may have noticed the end first, without knowing how it came.
func markExit(dir string, pid int, start uint64, signal int) {
	var e exit
	if readJSON(filepath.Join(dir, exitFile), &e) == nil && e.Pid == pid && e.PidStart == start {
		if signal != 0 && e.Signal == 0 {
			e.Signal = signal
			writeJSON(filepath.Join(dir, exitFile), e)
		}
		return
	}
	writeJSON(filepath.Join(dir, exitFile), exit{Pid: pid, PidStart: start, FinishedAt: time.Now().UTC(), Signal: signal})
}

// killedBy is the signal that ended a reaped process, 0 when it exited.
func killedBy(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return int(ws.Signal())
	}
	return 0
}

func (d *Driver) accel(ctx context.Context, kernel string) string {
	if d.o.accel != AccelAuto {
		return d.o.accel
	}
	d.accelMu.Lock()
	defer d.accelMu.Unlock()
	if d.accelVal != "" {
		return d.accelVal
	}
	switch v := os.Getenv(AccelEnv); v {
	case AccelKVM, AccelTCG:
		d.accelVal = v
		return v
	case "":
	default:
		d.o.log.Warn("ignoring unknown accelerator", "env", AccelEnv, "value", v)
	}
	if kvmWorks(ctx, d.o.binary, kernel, d.o.log) {
		d.accelVal = AccelKVM
		return AccelKVM
	}
	if ctx.Err() == nil { // a cancelled probe decides nothing
		d.accelVal = AccelTCG
	}
	return AccelTCG
}

// waitExit waits for the run r to end, through the reaping goroutine when
// this Driver started it, else through a pidfd.
func (d *Driver) waitExit(ctx context.Context, name string, r run) error {
	d.mu.Lock()
	c := d.children[name]
	d.mu.Unlock()
	if c != nil && c.pid == r.Pid && c.start == r.PidStart {
		select {
		case <-c.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if err := waitGone(ctx, r.Pid, r.PidStart); err != nil {
		return err
	}
	markExit(d.dir(name), r.Pid, r.PidStart, 0)
	if spec, err := d.readSpec(name); err == nil && len(spec.Shares) > 0 {
		d.reapDaemons(d.dir(name), r.PidStart, virtiofsdGrace)
	}
	return nil
}

// Stop implements vm.Driver: the guest shutdown hook, then ACPI power-off
// (QMP system_powerdown), each bounded by timeout, then QMP quit and
// SIGKILL.
func (d *Driver) Stop(ctx context.Context, name string, timeout time.Duration) error {
	if _, err := d.readSpec(name); err != nil {
		return err
	}
	unlock, err := d.lock(ctx, name)
	if err != nil {
		return fmt.Errorf("stopping VM %s: %w", name, err)
	}
	defer unlock()
	r, running, err := d.current(name)
	if err != nil || !running {
		return err
	}
	log := d.o.log.With("vm", name, "pid", r.Pid)
	dir := d.dir(name)
	defer func() {
		if !alive(r.Pid, r.PidStart) {
			cleanSockets(dir)
		}
	}()
	// step tries one way of stopping and reports whether qemu ended.
	step := func(what string, bound time.Duration, ask func(context.Context) error) (bool, error) {
		sctx, cancel := context.WithTimeout(ctx, bound)
		defer cancel()
		if err := ask(sctx); err != nil {
			log.Debug("stop step refused", "step", what, "err", err)
			return false, ctx.Err()
		}
		err := d.waitExit(sctx, name, r)
		if err == nil {
			log.Debug("VM stopped", "step", what)
			return true, nil
		}
		log.Debug("stop step timed out", "step", what, "after", bound)
		return false, ctx.Err()
	}
	if d.o.shutdown != nil && timeout > 0 {
		done, err := step("guest", timeout, func(ctx context.Context) error {
			return d.o.shutdown(ctx, name, filepath.Join(dir, agentSock))
		})
		if done || err != nil {
			return wrapStop(name, err)
		}
	}
	qmpCmd := func(cmd string) func(context.Context) error {
		return func(ctx context.Context) error {
			q, err := dialQMP(ctx, filepath.Join(dir, qmpSock))
			if err != nil {
				return err
			}
			defer q.close()
			_, err = q.exec(ctx, cmd, nil)
			if cmd == "quit" && err != nil && ctx.Err() == nil {
				return nil // qemu may close the socket before it answers
			}
			return err
		}
	}
	if timeout > 0 {
		// Press the button again every second while waiting: a press
		// before the guest's listener is ready is lost.
		done, err := step("acpi", timeout, func(ctx context.Context) error {
			if err := qmpCmd("system_powerdown")(ctx); err != nil {
				return err
			}
			go func() {
				t := time.NewTicker(time.Second)
				defer t.Stop()
				for {
					select {
					case <-ctx.Done():
						return
					case <-t.C:
						qmpCmd("system_powerdown")(ctx)
					}
				}
			}()
			return nil
		})
		if done || err != nil {
			return wrapStop(name, err)
		}
	}
	if done, err := step("quit", quitTimeout, qmpCmd("quit")); done || err != nil {
		return wrapStop(name, err)
	}
	return wrapStop(name, d.kill(ctx, name, r))
}

// maxConsoleLog is the size past which Start moves the console log to
// <name>.1 (replacing an older one), so that a VM started over and over does
// not fill the disk.
const maxConsoleLog = 4 << 20

func rotate(path string, max int64) {
	if fi, err := os.Stat(path); err == nil && fi.Size() > max {
		os.Rename(path, path+".1")
	}
}

func consolePath(dir string, spec vm.Spec) string {
	if spec.ConsoleLog != "" {
		return spec.ConsoleLog
	}
	return filepath.Join(dir, consoleLog)
}

// cleanSockets removes the sockets of a qemu that has ended. Callers hold
// the VM's lock, so no new qemu is using them.
func cleanSockets(dir string) {
	for _, f := range []string{qmpSock, agentSock} {
		os.Remove(filepath.Join(dir, f))
	}
	vfs, _ := filepath.Glob(filepath.Join(dir, shareSockPrefix+"*.sock"))
	for _, f := range vfs {
		os.Remove(f)
	}
}

func wrapStop(name string, err error) error {
	if err != nil {
		return fmt.Errorf("stopping VM %s: %w", name, err)
	}
	return nil
}

// Kill implements vm.Driver. It takes no lock, so that it can cut a Stop
// short.
func (d *Driver) Kill(ctx context.Context, name string) error {
	if _, err := d.readSpec(name); err != nil {
		return err
	}
	r, running, err := d.current(name)
	if err != nil || !running {
		return err
	}
	if err := d.kill(ctx, name, r); err != nil {
		return fmt.Errorf("killing VM %s: %w", name, err)
	}
	return nil
}

func (d *Driver) kill(ctx context.Context, name string, r run) error {
	if err := killPid(r.Pid, r.PidStart, unix.SIGKILL); err != nil {
		return err
	}
	return d.waitExit(ctx, name, r)
}

// Inspect implements vm.Driver.
func (d *Driver) Inspect(ctx context.Context, name string) (vm.Status, error) {
	spec, err := d.readSpec(name)
	if err != nil {
		return vm.Status{}, err
	}
	st := vm.Status{
		Name:    name,
		State:   vm.StateCreated,
		Agent:   d.path(name, agentSock),
		Console: consolePath(d.dir(name), spec),
		Dir:     d.dir(name),
	}
	if _, err := os.Stat(d.path(name, restoringFile)); err == nil {
		// A Start that holds the lock finishes its own restore.
		if unlock, err := d.tryLock(name); err == nil {
			d.finishRestore(ctx, name)
			unlock()
		}
	}
	r, running, err := d.current(name)
	if err != nil {
		return st, err
	}
	if r.Pid == 0 {
		return st, nil
	}
	st.StartedAt = r.StartedAt
	if running {
		st.State, st.Pid = vm.StateRunning, r.Pid
		return st, nil
	}
	st.State = vm.StateExited
	d.awaitReaper(ctx, name, r)
	var e exit
	if readJSON(d.path(name, exitFile), &e) != nil || e.Pid != r.Pid || e.PidStart != r.PidStart {
		// Ended while no Driver watched it (for example the host
		// rebooted): record when it was noticed.
		markExit(d.dir(name), r.Pid, r.PidStart, 0)
		readJSON(d.path(name, exitFile), &e)
	}
	st.FinishedAt, st.Signal = e.FinishedAt, e.Signal
	return st, nil
}

// awaitReaper waits until this Driver's reaper recorded how the run r
// ended, when this Driver started it: a process is not running as soon
// as it is a zombie, but only its reaper learns what signal ended it.
func (d *Driver) awaitReaper(ctx context.Context, name string, r run) {
	d.mu.Lock()
	c := d.children[name]
	d.mu.Unlock()
	if c != nil && c.pid == r.Pid && c.start == r.PidStart {
		select {
		case <-c.reaped:
		case <-ctx.Done():
		}
	}
}

// Wait implements vm.Waiter.
func (d *Driver) Wait(ctx context.Context, name string) (vm.Status, error) {
	if _, err := d.readSpec(name); err != nil {
		return vm.Status{}, err
	}
	r, running, err := d.current(name)
	if err != nil {
		return vm.Status{}, err
	}
	if running {
		if err := d.waitExit(ctx, name, r); err != nil {
			return vm.Status{}, fmt.Errorf("waiting for VM %s: %w", name, err)
		}
	}
	return d.Inspect(ctx, name)
}

// List implements vm.Lister.
func (d *Driver) List(ctx context.Context) ([]vm.Status, error) {
	ents, err := os.ReadDir(d.root)
	if err != nil {
		return nil, fmt.Errorf("listing VMs in %s: %w", d.root, err)
	}
	var out []vm.Status
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		st, err := d.Inspect(ctx, e.Name())
		if errors.Is(err, vm.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b vm.Status) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// Remove implements vm.Driver.
func (d *Driver) Remove(ctx context.Context, name string) error {
	spec, err := d.readSpec(name)
	if errors.Is(err, vm.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	unlock, err := d.lock(ctx, name)
	if err != nil {
		return fmt.Errorf("removing VM %s: %w", name, err)
	}
	defer unlock()
	if _, running, err := d.current(name); err != nil {
		return err
	} else if running {
		return fmt.Errorf("removing VM %s: %w (stop it first)", name, vm.ErrRunning)
	}
	if len(spec.Shares) > 0 {
		d.reapDaemons(d.dir(name), 0, 0)
	}
	// Rename first so that the VM disappears at once, even if deleting
	// its files is cut short.
	gone, err := os.MkdirTemp(d.root, "."+name+".removing-")
	if err != nil {
		return fmt.Errorf("removing VM %s: %w", name, err)
	}
	if err := os.Rename(d.dir(name), filepath.Join(gone, name)); err != nil {
		os.Remove(gone)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("removing VM %s: %w", name, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("removing VM %s: %w", name, err)
	}
	d.mu.Lock()
	delete(d.children, name)
	d.mu.Unlock()
	return nil
}

// tryLock takes the VM's flock if no one holds it.
func (d *Driver) tryLock(name string) (func(), error) {
	f, err := os.OpenFile(d.path(name, lockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, err
	}
	return func() { f.Close() }, nil
}

// lock takes the VM's flock, waiting for ctx.
func (d *Driver) lock(ctx context.Context, name string) (func(), error) {
	f, err := os.OpenFile(d.path(name, lockFile), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("locking: %w", err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// writeJSON writes v to path atomically (atomicfile), readable by the
// owner only: a spec holds the guest's environment.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return atomicfile.WriteFile(path, append(b, '\n'), 0o600)
}
