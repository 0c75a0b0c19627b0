package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/oci"
	"github.com/vmcompose/vmcompose/oci/rootfs"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/vm/initramfs"
	"github.com/vmcompose/vmcompose/vm/kernel"
)

// Runtime holds what booting a service needs: the image store, a VM
// driver and the guest init binary.
type Runtime struct {
	Store  *oci.Store
	Driver vm.Driver
	// Init is the vminit binary packed into the initramfs.
	Init string
	// Progress receives image pull events; nil discards them.
	Progress func(oci.Event)
	// Drivers opens the VM driver of any project, to name the VM that
	// holds a volume another wants; nil leaves it unnamed.
	Drivers DriverFunc
}

// Service is one instance of a compose service to boot.
type Service struct {
	Project *project.Project
	Name    string // the VM's name in the driver, e.g. "web-1" or "web-run-1a2b"
	Config  types.ServiceConfig
	// StateDir is the project's state dir, where its volumes live; empty
	// means StateDir(Project.Name).
	StateDir string
	// Override applies `run` arguments to the guest spec before it starts.
	Env        []string
	Entrypoint string
	Command    []string
}

// Prepared is a service whose image, root filesystem, kernel and
// initramfs are ready.
type Prepared struct {
	Service   string
	Image     oci.Image
	Rootfs    string
	Kernel    *kernel.Kernel
	Initramfs string
	Spec      vm.Spec
	Guest     agent.Spec
	// Notices are for the user, once: volumes moved into the store, or
	// recovered.
	Notices []string
}

// ServiceModules are the kernel modules a service VM loads at boot (their
// dependencies come along): the virtio-mmio transport, disks, the agent's
// serial port, overlayfs for the root, and the power button through which
// the VMM asks the guest to stop. Loading every module a guest might want
// took 175 ms of each boot under TCG; this set about 75 ms.
var ServiceModules = []string{"virtio_mmio", "virtio_blk", "virtio_console", "overlay", "button", "evdev"}

// DeviceModules are in the initramfs too, but a guest loads one only when
// it has a device that wants it (see modload.LoadForDevices): NICs and
// shared folders.
var DeviceModules = []string{"virtio_net", "virtiofs"}

// Prepare gets everything a service's VM boots from: the image (pulled
// when missing, as pull_policy says), its root filesystem, the kernel and
// the initramfs. It starts nothing.
func (r *Runtime) Prepare(ctx context.Context, s Service) (*Prepared, error) {
	svc := s.Config
	svc.Image = planner.ImageName(s.Project.Name, svc) // a build: service's image may be named for it
	if svc.Image == "" {
		return nil, fmt.Errorf("service %q: no image: set image: to the reference of the image to run", s.Config.Name)
	}
	img, err := r.Image(ctx, svc)
	if err != nil {
		return nil, fmt.Errorf("service %q: %w", svc.Name, err)
	}
	fs, _, err := rootfs.Ensure(ctx, img.V1, r.Store.RootfsDir())
	if err != nil {
		return nil, fmt.Errorf("service %q: root filesystem of %s: %w", svc.Name, img.Ref, err)
	}
	vmcfg := s.Project.VMs[svc.Name]
	k, err := r.kernel(s.Project, vmcfg)
	if err != nil {
		return nil, fmt.Errorf("service %q: %w", svc.Name, err)
	}
	initrd, err := initramfs.Build(ctx, k, r.Init, filepath.Join(r.Store.Dir(), initramfs.SubDir), initramfs.WithModules(ServiceModules...), initramfs.WithOnDemand(DeviceModules...))
	if err != nil {
		return nil, fmt.Errorf("service %q: %w", svc.Name, err)
	}
	guest := GuestSpec(svc, img.Config, s.Name)
	if err := Override(&guest, s.Env, s.Entrypoint, s.Command); err != nil {
		return nil, fmt.Errorf("service %q: %w", svc.Name, err)
	}
	dir := s.StateDir
	if dir == "" {
		if dir, err = StateDir(s.Project.Name); err != nil {
			return nil, fmt.Errorf("service %q: %w", svc.Name, err)
		}
	}
	st, err := Volumes(ctx, s.Project, svc, dir, s.Name)
	if err != nil {
		return nil, fmt.Errorf("service %q: %w", svc.Name, err)
	}
	guest.Mounts = append(guest.Mounts, st.Mounts...)
	if guest.Files, err = GuestFiles(s.Project, svc); err != nil {
		return nil, fmt.Errorf("service %q: %w", svc.Name, err)
	}
	notices, err := r.checkVolumeDisks(ctx, st.Disks)
	if err != nil {
		return nil, fmt.Errorf("service %q: %w", svc.Name, err)
	}
	return &Prepared{
		Service: svc.Name, Image: img, Rootfs: fs, Kernel: k, Initramfs: initrd, Guest: guest,
		Notices: append(st.Notices, notices...),
		Spec: vm.Spec{
			Name:             s.Name,
			VCPUs:            vmcfg.VCPUs,
			Memory:           vmcfg.Memory,
			Kernel:           k.Image,
			Initramfs:        initrd,
			Cmdline:          vmcfg.KernelArgs,
			Disks:            append([]vm.Disk{{Path: fs, Serial: "rootfs", ReadOnly: true}}, st.Disks...),
			Shares:           st.Shares,
			ScratchSize:      vmcfg.Disk,
			TranslationCache: vmcfg.TranslationCache,
		},
	}, nil
}

// Image returns the service's image from the store, pulling it first when
// pull_policy asks for it or it is missing.
func (r *Runtime) Image(ctx context.Context, svc types.ServiceConfig) (oci.Image, error) {
	if svc.Build != nil {
		return r.builtImage(svc)
	}
	policy, err := oci.ParsePullPolicy(svc.PullPolicy)
	if err != nil {
		return oci.Image{}, fmt.Errorf("pull_policy: %w", err)
	}
	opts := []oci.Option{oci.WithPolicy(policy), oci.WithPlatform(svc.Platform)}
	if r.Progress != nil {
		opts = append(opts, oci.WithProgress(r.Progress))
	}
	return r.Store.Pull(ctx, svc.Image, opts...)
}

// builtImage is a build: service's image, which the CLI built into the
// store before it asked for the service (as compose, up does not pull an
// image it can build).
func (r *Runtime) builtImage(svc types.ServiceConfig) (oci.Image, error) {
	img, err := r.Store.Image(svc.Image, oci.WithPlatform(svc.Platform))
	if errors.Is(err, oci.ErrNotFound) {
		return oci.Image{}, fmt.Errorf("image %q is not built yet: `vmcompose build %s` (or `vmcompose up` without --no-build) builds it", svc.Image, svc.Name)
	}
	return img, err
}

// kernel is x-vm.kernel (relative to the project directory) when set, else
// the store's.
func (r *Runtime) kernel(p *project.Project, vmcfg project.VM) (*kernel.Kernel, error) {
	if vmcfg.Kernel == "" {
		return kernel.Find(r.Store.Dir())
	}
	path := vmcfg.Kernel
	if !filepath.IsAbs(path) {
		path = filepath.Join(p.WorkingDir, path)
	}
	k, err := kernel.Open(path, "")
	if err != nil {
		return nil, fmt.Errorf("x-vm.kernel %s: %w", vmcfg.Kernel, err)
	}
	return k, nil
}

// Attached is a running service VM whose agent the host holds.
type Attached struct {
	Name   string
	Client *agent.Client
	driver vm.Driver
}

// Boot creates (when missing) and starts the prepared VM, connects to its
// agent and starts the service process. On an error nothing keeps running.
func (r *Runtime) Boot(ctx context.Context, p *Prepared) (_ *Attached, err error) {
	name := p.Spec.Name
	if err := r.Driver.Create(ctx, p.Spec); err != nil && !errors.Is(err, vm.ErrExists) {
		return nil, err
	}
	if err := r.Driver.Start(ctx, name); err != nil {
		return nil, r.ExplainStart(ctx, err)
	}
	defer func() {
		if err != nil {
			kctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			r.Driver.Kill(kctx, name)
		}
	}()
	st, err := r.Driver.Inspect(ctx, name)
	if err != nil {
		return nil, err
	}
	client, err := DialAgent(ctx, st)
	if err != nil {
		return nil, fmt.Errorf("service %q: VM %s: %w (boot messages: %s)", p.Service, name, err, st.Console)
	}
	if err := client.Start(ctx, p.Guest); err != nil {
		client.Close()
		if r := GuestRefusal(err); r != nil {
			return nil, fmt.Errorf("service %q: %w", p.Service, r)
		}
		return nil, fmt.Errorf("service %q: VM %s: starting the service: %w", p.Service, name, err)
	}
	return &Attached{Name: name, Client: client, driver: r.Driver}, nil
}

// DialAgent connects to the VM's agent, waiting up to a minute for vminit
// to answer.
func DialAgent(ctx context.Context, st vm.Status) (*agent.Client, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	return agent.DialSocket(ctx, st.Agent)
}

// Stream copies the service's stdout and stderr to the writers until the
// service exits, and returns how it ended.
func (a *Attached) Stream(ctx context.Context, stdout, stderr io.Writer) (agent.ExitStatus, error) {
	var wg sync.WaitGroup
	for _, o := range []struct {
		which agent.Output
		w     io.Writer
	}{{agent.Stdout, stdout}, {agent.Stderr, stderr}} {
		r, _, err := a.Client.Attach(ctx, o.which, 0)
		if err != nil {
			return agent.ExitStatus{}, fmt.Errorf("VM %s: attaching %s: %w", a.Name, o.which, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer r.Close()
			io.Copy(o.w, r)
		}()
	}
	status, err := a.Client.Wait(ctx)
	wg.Wait()
	if err != nil {
		return status, fmt.Errorf("VM %s: waiting for the service: %w", a.Name, err)
	}
	return status, nil
}

// Stop asks the service to stop (stop signal, grace period, SIGKILL) and
// then the VM to end; each step is bounded.
func (a *Attached) Stop(ctx context.Context, timeout time.Duration) error {
	sctx, cancel := context.WithTimeout(ctx, timeout)
	a.Client.Shutdown(sctx)
	cancel()
	a.Client.Close()
	return a.driver.Stop(ctx, a.Name, 10*time.Second)
}

// Close detaches from the agent; the VM keeps running.
func (a *Attached) Close() error { return a.Client.Close() }

// FindInit returns the vminit binary: $VMCOMPOSE_VMINIT, else vminit beside
// the running executable.
func FindInit() (string, error) {
	if p := os.Getenv("VMCOMPOSE_VMINIT"); p != "" {
		return p, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding vminit: %w", err)
	}
	p := filepath.Join(filepath.Dir(exe), "vminit")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("no vminit beside %s: build it with `make build` (or set VMCOMPOSE_VMINIT)", exe)
	}
	return p, nil
}
