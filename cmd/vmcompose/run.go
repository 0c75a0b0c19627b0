package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/compose-spec/compose-go/v2/format"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/internal/terminal"
	"github.com/vmcompose/vmcompose/network/netproc"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/reconcile"
	"github.com/vmcompose/vmcompose/vm"
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run a one-off command of a service in a new VM",
		ArgsUsage: "SERVICE [COMMAND [ARG...]]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "rm", Usage: "remove the VM when the command exits"},
			&cli.BoolFlag{Name: "detach", Aliases: []string{"d"}, Usage: "run in the background (not supported yet)"},
			&cli.StringFlag{Name: "name", Usage: "name of the VM (default: SERVICE-run-RANDOM)"},
			&cli.StringSliceFlag{Name: "env", Aliases: []string{"e"}, Usage: "set `KEY=VALUE` in the environment"},
			&cli.StringFlag{Name: "entrypoint", Usage: "override the image's entrypoint"},
			&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "run as `USER` (name or uid, optionally :group)"},
			&cli.StringFlag{Name: "workdir", Aliases: []string{"w"}, Usage: "run in `DIR`"},
			&cli.BoolFlag{Name: "no-deps", Usage: "don't start the services it depends on"},
			&cli.BoolFlag{Name: "build", Usage: "build the image before running it (and those of the services it depends on)"},
			&cli.BoolFlag{Name: "service-ports", Usage: "publish the service's ports: as up does"},
			&cli.StringSliceFlag{Name: "publish", Aliases: []string{"p"}, Usage: "publish a port, `[IP:]HOST:VM[/PROTO]`"},
			&cli.BoolFlag{Name: "use-aliases", Usage: "answer to the service's name and network aliases too"},
			&cli.BoolFlag{Name: "no-TTY", Aliases: []string{"T"}, Usage: "no pseudo-terminal (default: one when stdin and stdout are terminals)"},
			&cli.BoolFlag{Name: "interactive", Aliases: []string{"i"}, Value: true, Usage: "attach stdin (-i=false: none)"},
			&cli.StringSliceFlag{Name: "volume", Aliases: []string{"v"}, Usage: "mount a volume, `SOURCE:TARGET[:ro]`"},
		},
		// Flags end at SERVICE: what follows is COMMAND's, as in docker
		// compose run (the flag package stops at the first argument).
		Action: runRun,
	}
}

// runOptions are the flags of one run, checked.
type runOptions struct {
	service, vmName string
	tty, stdin      bool
	ports           []types.ServicePortConfig
	volumes         []types.ServiceVolumeConfig
}

func runRun(c *cli.Context) error {
	if c.NArg() == 0 {
		return fmt.Errorf("run: name the service to run")
	}
	if c.Bool("detach") {
		return fmt.Errorf("run --detach is not supported yet: a one-off VM lives as long as its vmcompose run; run it in the background of your shell (vmcompose run -T ... &), or make it a service and use up -d")
	}
	p, dir, err := projectState(c)
	if err != nil {
		return err
	}
	o := runOptions{service: c.Args().First(), vmName: c.String("name")}
	svc, ok := p.Services[o.service]
	if !ok {
		if svc, ok = p.DisabledServices[o.service]; !ok {
			return fmt.Errorf("no such service: %s (the project has: %v)", o.service, p.ServiceNames())
		}
		// docker compose run starts a service whatever its profiles.
	}
	// What up would refuse of the service itself, run refuses too.
	if msgs := append(planner.ServiceProblems(p.Project, svc), p.Problems[o.service]...); len(msgs) > 0 {
		return fmt.Errorf("service %q: %s", o.service, strings.Join(msgs, "; "))
	}
	if o.vmName == "" {
		o.vmName = o.service + "-run-" + randomHex(3)
	}
	if s, _, ok := planner.ParseInstance(o.vmName); ok {
		if _, isService := p.VMs[s]; isService {
			return fmt.Errorf("run --name %s: that is the name of an instance of service %s: choose another name", o.vmName, s)
		}
	}
	if err := o.parse(c, svc); err != nil {
		return err
	}
	svc.Volumes = append(svc.Volumes, o.volumes...)
	for _, w := range reconcile.BindWarnings(svc) {
		fmt.Fprintf(c.App.ErrWriter, "warning: %s\n", w)
	}
	rt, err := newRuntime(c, p.Name)
	if err != nil {
		return err
	}
	if st, err := rt.Driver.Inspect(c.Context, o.vmName); err == nil && st.State == vm.StateRunning {
		return fmt.Errorf("run --name %s: a VM of that name runs already: choose another name", o.vmName)
	}
	if err := ensureBuilt(c, p, []string{o.service}, !c.Bool("no-deps"), c.Bool("build")); err != nil {
		return err
	}
	if !c.Bool("no-deps") {
		if err := startDependencies(c, p, dir, svc); err != nil {
			return err
		}
	}
	prep, err := rt.Prepare(c.Context, reconcile.Service{
		Project: p, Name: o.vmName, Config: svc, StateDir: dir,
		Env: c.StringSlice("env"), Entrypoint: c.String("entrypoint"), Command: c.Args().Tail(),
	})
	if err != nil {
		if _, ierr := rt.Driver.Inspect(c.Context, o.vmName); errors.Is(ierr, vm.ErrNotFound) {
			reconcile.RemoveAnonVolumes(dir, o.vmName) // made for no VM
		}
		return err
	}
	for _, n := range prep.Notices {
		fmt.Fprintln(c.App.ErrWriter, n)
	}
	if u := c.String("user"); u != "" {
		prep.Guest.User = u
	}
	if w := c.String("workdir"); w != "" {
		prep.Guest.WorkingDir = w
	}
	prep.Guest.Tty, prep.Guest.OpenStdin = o.tty, o.stdin
	if o.tty {
		prep.Guest.Rows, prep.Guest.Cols = terminal.Size(os.Stdin)
	}
	// The VM lives as long as this command: if vmcompose dies, so does it.
	prep.Spec.DieWithController = true
	return runVM(c, rt, dir, p, svc, prep, o)
}

// parse checks the flags that shape the VM.
func (o *runOptions) parse(c *cli.Context, svc types.ServiceConfig) error {
	publish := c.StringSlice("publish")
	if len(publish) > 0 && c.Bool("service-ports") {
		return fmt.Errorf("run: --service-ports and --publish cannot be used together: choose one")
	}
	if c.Bool("service-ports") {
		o.ports = svc.Ports
	}
	for _, spec := range publish {
		ports, err := types.ParsePortConfig(spec)
		if err != nil {
			return fmt.Errorf("run --publish %q: %w (want [IP:]HOST:VM[/PROTO])", spec, err)
		}
		o.ports = append(o.ports, ports...)
	}
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	for _, spec := range c.StringSlice("volume") {
		v, err := format.ParseVolume(spec)
		if err != nil {
			return fmt.Errorf("run --volume %q: %w (want SOURCE:TARGET[:ro])", spec, err)
		}
		if v.Type == types.VolumeTypeBind && !filepath.IsAbs(v.Source) {
			v.Source = filepath.Join(wd, v.Source)
		}
		o.volumes = append(o.volumes, v)
	}
	// docker compose run: stdin unless -i=false, and a terminal when
	// both ends are one, unless -T.
	o.stdin = c.Bool("interactive")
	o.tty = o.stdin && !c.Bool("no-TTY") && terminal.IsTerminal(os.Stdin) && terminal.IsTerminal(os.Stdout)
	return nil
}

// startDependencies starts the services svc depends on through the
// project's supervisor, as `up -d` of them would, and returns once its
// depends_on conditions hold (healthy, completed...). Optional
// dependencies that no active profile enables are left out.
func startDependencies(c *cli.Context, p *project.Project, dir string, svc types.ServiceConfig) error {
	var deps []string
	for _, name := range slices.Sorted(maps.Keys(svc.DependsOn)) {
		if _, ok := p.Services[name]; ok || svc.DependsOn[name].Required {
			deps = append(deps, name)
		}
	}
	if len(deps) == 0 {
		return nil
	}
	req, err := request(c)
	if err != nil {
		return err
	}
	req.Services, req.RunFor = deps, svc.Name
	sup, err := connect(c.Context, dir, true)
	if err != nil {
		return err
	}
	if err := sup.call(c.Context, "/up", req, printEvent(c)); err != nil {
		reportFailure(c, dir, err)
		return err
	}
	return nil
}

// runVM joins the prepared VM to its networks, boots it, connects the
// terminal, and undoes it all when the command ends, however it ends.
func runVM(c *cli.Context, rt *reconcile.Runtime, dir string, p *project.Project, svc types.ServiceConfig, prep *reconcile.Prepared, o runOptions) (err error) {
	// Signals go to the service, not to us: the first Ctrl-C stops it the
	// way docker compose run does, a second one kills the VM. From here
	// on nothing is cancelled: every step below ends by itself.
	ctx := context.WithoutCancel(c.Context)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sigs)

	nets := projectNetworks(dir, nil)
	rec, err := nets.AttachOneOff(c.Context, p.Project, o.vmName, svc, netproc.OneOff{Ports: o.ports, Aliases: c.Bool("use-aliases"), Driver: rt.Driver}, &prep.Spec, &prep.Guest)
	joined := rec != nil || err != nil // an attach that failed half-way too
	if err != nil {
		err = fmt.Errorf("service %q: network: %w", svc.Name, err)
	}
	defer func() {
		if !joined {
			return
		}
		if derr := nets.Detach(o.vmName); derr != nil && err == nil {
			err = fmt.Errorf("service %q: detaching %s from the network: %w", svc.Name, o.vmName, derr)
		}
		nets.Close() // ends the network process if nothing else is attached
	}()
	if err != nil {
		return err
	}
	var netproc *netproc.Ping // what the VM's NICs connect to
	if rec != nil {
		netproc, _ = nets.Ping(ctx)
	}
	if rec == nil && len(o.ports) > 0 {
		return fmt.Errorf("service %q: run --publish/--service-ports: the service joins no network (network_mode: none): drop the flag", svc.Name)
	}
	// remove removes the VM and, as docker compose run --rm does with the
	// container, its anonymous volumes; named volumes stay.
	remove := func() error {
		if err := rt.Driver.Remove(ctx, o.vmName); err != nil {
			return err
		}
		return reconcile.RemoveAnonVolumes(dir, o.vmName)
	}
	defer func() {
		if c.Bool("rm") {
			if rerr := remove(); rerr != nil && err == nil {
				err = rerr
			}
		}
	}()

	att, err := rt.Boot(c.Context, prep)
	if err != nil {
		remove()
		return commandFailure(err)
	}
	if rec != nil && !nets.Keeps(ctx, netproc, o.vmName) {
		// It ended while the VM booted: a supervisor that exited just
		// then (see Supervisor.anyRunning), or a crash.
		att.Close()
		rt.Driver.Kill(ctx, o.vmName)
		return fmt.Errorf("service %q: the project's network process ended while %s booted: run it again", svc.Name, o.vmName)
	}
	if o.stdin || o.tty {
		in, err := att.Client.Input(ctx)
		if err != nil {
			att.Close()
			rt.Driver.Kill(ctx, o.vmName)
			return fmt.Errorf("service %q: attaching stdin: %w", svc.Name, err)
		}
		defer in.Close()
		if o.tty {
			// Every key, Ctrl-C included, goes to the guest's terminal.
			restore := terminal.Raw(os.Stdin, in)
			defer restore()
		}
		if o.stdin {
			go in.SendStdin(os.Stdin)
		}
	}
	go forwardSignals(ctx, sigs, att, rt.Driver, o.vmName)
	status, err := att.Stream(ctx, c.App.Writer, c.App.ErrWriter)
	att.Close()
	// The guest powers off once the exit status is delivered; wait for it.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	if _, werr := vm.Wait(wctx, rt.Driver, o.vmName); werr != nil {
		rt.Driver.Kill(ctx, o.vmName)
	}
	cancel()
	if err != nil {
		return err
	}
	if status.Code != 0 {
		return exitCode(status.Code)
	}
	return nil
}

// forwardSignals sends the signals vmcompose gets to the service; a second
// Ctrl-C kills the VM. (With a terminal, Ctrl-C is a keystroke, typed into
// the guest's terminal, and no signal reaches vmcompose.)
func forwardSignals(ctx context.Context, sigs <-chan os.Signal, att *reconcile.Attached, d vm.Driver, name string) {
	n := 0
	for sig := range sigs {
		if n++; n > 1 && sig == os.Interrupt {
			d.Kill(ctx, name)
			return
		}
		att.Client.Signal(ctx, unix.SignalName(sig.(syscall.Signal)))
	}
}

// exitCode makes vmcompose exit with a service's status and print nothing.
type exitCode int

func (e exitCode) Error() string { return "" }
func (e exitCode) ExitCode() int { return int(e) }

// failedCommand is an error starting the command of a one-off VM, with
// docker run's exit status for it: 127 when the command is not in the
// image, 126 when it is there and cannot be run.
type failedCommand struct {
	err  error
	code int
}

func (e *failedCommand) Error() string { return e.err.Error() }
func (e *failedCommand) Unwrap() error { return e.err }
func (e *failedCommand) ExitCode() int { return e.code }

// commandFailure gives err docker's exit status when it is a failure to
// start the command; other errors exit 1.
func commandFailure(err error) error {
	switch {
	case errors.Is(err, agent.ErrCommandNotFound):
		return &failedCommand{err, 127}
	case errors.Is(err, agent.ErrCommandNotExecutable):
		return &failedCommand{err, 126}
	}
	return err
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// vmRoot is where a project's VMs live: <state dir>/vms.
func vmRoot(projectName string) (string, error) {
	dir, err := reconcile.StateDir(projectName)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "vms"), nil
}
