package vm

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"regexp"
	"time"
)

// Sentinel errors. Backends wrap them with %w and the VM's name.
var (
	// ErrNotFound: no VM of that name exists (never created, or removed).
	ErrNotFound = errors.New("no such VM")
	// ErrExists: Create was given the name of a VM that exists. Recreating a
	// VM is Remove then Create.
	ErrExists = errors.New("VM exists")
	// ErrRunning: the operation needs a VM that does not run (Remove).
	ErrRunning = errors.New("VM is running")
	// ErrNotSupported: the backend lacks an optional ability, or cannot run
	// a spec on this host (for example a kernel image format it cannot boot).
	ErrNotSupported = errors.New("not supported by this VM backend")
)

// ScratchSerial is the serial of the scratch disk the driver creates for a
// spec with ScratchSize > 0. The guest finds it by
// /sys/block/vd*/serial; it holds an empty ext4 file system when new.
const ScratchSerial = "scratch"

// DiskInUseError: the VMM could not take a disk image, because another
// process (another VM) has it open and its locks exclude this VM's use
// (two writers, or a reader beside a writer).
type DiskInUseError struct {
	Path string
}

func (e *DiskInUseError) Error() string {
	return fmt.Sprintf("disk %s is in use by another VM", e.Path)
}

// Spec is what one VM is made of. It knows nothing of compose: the caller
// maps a service to a Spec. Paths are absolute.
type Spec struct {
	// Name identifies the VM within the driver's state root. It is a file
	// name: letters, digits, '.', '_' and '-', starting with a letter or a
	// digit, at most 64 bytes.
	Name string `json:"name"`

	// VCPUs and Memory (bytes) size the guest. Zero means 1 vCPU and
	// 256 MiB.
	VCPUs  int   `json:"vcpus"`
	Memory int64 `json:"memory"`

	// Kernel is the image the VMM boots (on amd64 with QEMU: an ELF vmlinux
	// with a PVH note, or a bzImage). Initramfs is optional.
	Kernel    string `json:"kernel"`
	Initramfs string `json:"initramfs,omitempty"`
	// Cmdline is appended to the backend's own kernel arguments (console,
	// timers, ...), so it can override them.
	Cmdline []string `json:"cmdline,omitempty"`

	// Disks are attached in order, each found by its serial in the guest.
	Disks []Disk `json:"disks,omitempty"`

	// TranslationCache (bytes), when > 0 and the VM runs under an
	// emulator without hardware virtualization (QEMU's TCG), sizes its
	// cache of translated code instead of the driver's default.
	TranslationCache int64 `json:"translation_cache,omitempty"`

	// ScratchSize, when > 0, makes the driver create the VM's writable
	// layer at Create: a sparse, ext4-formatted disk of that many bytes with
	// serial ScratchSerial. It survives Stop and Start and is deleted by
	// Remove, as a container's writable layer is.
	ScratchSize int64 `json:"scratch_size,omitempty"`

	// Shares are host paths the guest mounts with virtiofs, each found by
	// its tag (`mount -t virtiofs TAG DIR`): compose's bind mounts. The
	// guest sees the host's files, owners and modes, and its writes land
	// in the host's files at once.
	Shares []Share `json:"shares,omitempty"`

	// Networks are NICs, each connected to the unix stream socket of the
	// process that carries the network. It must listen before Start (Start
	// fails when the socket does not exist); a VMM does not reconnect when
	// that process restarts.
	Networks []Network `json:"networks,omitempty"`

	// ConsoleLog receives the guest's console (kernel warnings and
	// errors, vminit's own log) for diagnostics; empty means console.log
	// in the VM's directory. It is appended to across starts; a backend
	// may rotate it when it grows large.
	ConsoleLog string `json:"console_log,omitempty"`

	// DieWithController ties the VM's life to the process that starts it:
	// when that process dies, the VMM is killed by the kernel (Linux
	// PR_SET_PDEATHSIG) instead of being left for adoption. Foreground runs
	// (`vmcompose run`) want it; VMs owned by a supervisor do not.
	DieWithController bool `json:"die_with_controller,omitempty"`
}

// Disk is a disk image attached to the VM.
type Disk struct {
	// Path is a raw disk image.
	Path string `json:"path"`
	// Serial names the disk to the guest: at most 20 bytes of letters,
	// digits, '.', '_' and '-'.
	Serial string `json:"serial"`
	// ReadOnly disks may be shared by any number of running VMs.
	ReadOnly bool `json:"read_only,omitempty"`
}

// Share is a host path served to the guest over virtiofs.
type Share struct {
	// Tag names the share to the guest: at most 36 bytes of letters,
	// digits, '.', '_' and '-'.
	Tag string `json:"tag"`
	// Source is the absolute host path: a directory, or a regular file,
	// which the guest then sees as the only entry of the share's root,
	// under its own name (so that a file share exposes no sibling). It
	// must exist at Start.
	Source string `json:"source"`
	// ReadOnly shares refuse the guest's writes. The backend enforces it
	// on the host, not by trusting the guest to mount it read-only.
	ReadOnly bool `json:"read_only,omitempty"`
	// Locks makes the file locks the guest takes on the share host locks,
	// which the other VMs sharing Source (and the host) see; without it
	// they are the guest's own. Backends say which kinds of lock they
	// carry.
	Locks bool `json:"locks,omitempty"`
}

// Network is one NIC of the VM.
type Network struct {
	// Socket is the unix stream socket of the network's process.
	Socket string `json:"socket"`
	// MAC is the NIC's address ("52:54:00:12:34:56"); empty lets the
	// backend derive a stable one from the VM's name and the NIC's index.
	MAC string `json:"mac,omitempty"`
}

// State is where a VM is in its life.
type State string

const (
	// Created: created (or stopped) and not running. Its scratch disk
	// holds whatever the guest left there.
	StateCreated State = "created"
	// Running: the VMM process runs. It says nothing of the guest's boot:
	// the agent channel does.
	StateRunning State = "running"
	// Exited: it ran and its VMM process ended (guest power-off, Stop,
	// Kill, crash).
	StateExited State = "exited"
)

// Status is what Inspect reports.
type Status struct {
	Name  string `json:"name"`
	State State  `json:"state"`
	// Pid is the VMM process while running (0 for in-process backends).
	Pid int `json:"pid,omitempty"`
	// StartedAt and FinishedAt are the last start and the end of the last
	// run, zero when there was none.
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// Signal is the signal that ended the last run's VMM process (9 when
	// it was SIGKILLed), 0 when it exited by itself or when nobody saw
	// how it ended: only its parent, the Driver that started it, can.
	Signal int `json:"signal,omitempty"`
	// Agent is the host end of the guest's control channel: a unix socket
	// path connected to the virtio-serial port named agent.PortName. Only
	// one client at a time.
	Agent string `json:"agent,omitempty"`
	// Console is the console log file.
	Console string `json:"console,omitempty"`
	// Dir is the VM's directory under the driver's state root.
	Dir string `json:"dir,omitempty"`
}

// Driver runs VMs of one backend. VMs live in a state root directory given
// to the backend's constructor (one folder per VM, named after Spec.Name).
// A Driver opened by another process on the same root sees and controls the
// same VMs, including running ones: that is how a restarted supervisor
// adopts the VMs of its predecessor (see each backend for how it knows a
// VMM process still runs). Methods are safe for concurrent use.
//
// Every method takes a context and stops waiting when it is cancelled;
// cancelling never leaves a half-created VM or a VMM process that the
// driver does not know about.
type Driver interface {
	// Create lays out the VM: its directory, the recorded spec and the
	// scratch disk. It does not start it. Create of an existing name
	// returns an error wrapping ErrExists, whatever the spec.
	Create(ctx context.Context, spec Spec) error

	// Start boots a created or exited VM and returns when the VMM runs (not
	// when the guest has booted). Start on a running VM returns nil. A
	// missing VM is ErrNotFound.
	Start(ctx context.Context, name string) error

	// Stop shuts the VM down and returns when its VMM process has ended:
	// first the guest is asked (the backend's guest shutdown hook, then
	// an ACPI power-button press), each bounded by timeout, then the VMM is
	// ended (QEMU: QMP quit, then SIGKILL). A zero timeout skips asking the
	// guest. Stop on a VM that does not run returns nil. A missing VM is
	// ErrNotFound.
	Stop(ctx context.Context, name string, timeout time.Duration) error

	// Kill ends the VMM process at once and returns when it has ended.
	// Kill on a VM that does not run returns nil. A missing VM is
	// ErrNotFound.
	Kill(ctx context.Context, name string) error

	// Inspect reports the VM's state. A missing VM is ErrNotFound.
	Inspect(ctx context.Context, name string) (Status, error)

	// Remove deletes the VM and everything the driver made for it,
	// the scratch disk included. Remove of a running VM returns an error
	// wrapping ErrRunning; Remove of a missing VM returns nil.
	Remove(ctx context.Context, name string) error
}

// Waiter is a Driver that can block until a VM stops running.
type Waiter interface {
	// Wait returns the VM's status once it does not run (at once if it
	// does not run now), or ctx's error.
	Wait(ctx context.Context, name string) (Status, error)
}

// Lister is a Driver that can enumerate its VMs, to find those that no
// state file mentions any more.
type Lister interface {
	// List reports every VM under the driver's state root, sorted by name.
	List(ctx context.Context) ([]Status, error)
}

// SpecReader is a Driver that returns the spec a VM was created with, to
// find what it uses (the disks and shares of volumes).
type SpecReader interface {
	// Spec returns VM name's spec, or an error wrapping ErrNotFound.
	Spec(ctx context.Context, name string) (Spec, error)
}

// GuestShutdownFunc asks the guest of VM name, whose control channel is
// the socket agent, to shut down (vminit stops the service, syncs and
// powers off), and returns once the request was accepted or failed. The
// owner of the agent connection supplies it, since the channel takes one
// client at a time. An error moves Stop on to the next step at once.
type GuestShutdownFunc func(ctx context.Context, name, agent string) error

// Wait blocks until VM name stops running, using d's Waiter when it has
// one and polling Inspect otherwise.
func Wait(ctx context.Context, d Driver, name string) (Status, error) {
	if w, ok := d.(Waiter); ok {
		return w.Wait(ctx, name)
	}
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		st, err := d.Inspect(ctx, name)
		if err != nil || st.State != StateRunning {
			return st, err
		}
		select {
		case <-ctx.Done():
			return st, fmt.Errorf("waiting for VM %s: %w", name, ctx.Err())
		case <-t.C:
		}
	}
}

var (
	nameRE   = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$`)
	serialRE = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,20}$`)
	tagRE    = regexp.MustCompile(`^[a-zA-Z0-9_.-]{1,36}$`)
)

// Validate checks a spec for what every backend needs. Errors name the VM
// and the field.
func (s Spec) Validate() error {
	if !nameRE.MatchString(s.Name) {
		return fmt.Errorf("VM name %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", s.Name)
	}
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("VM %s: %s: %s", s.Name, field, fmt.Sprintf(format, args...))
	}
	if s.VCPUs < 0 || s.VCPUs > 255 {
		return bad("vcpus", "%d, want 1-255", s.VCPUs)
	}
	if s.Memory != 0 && s.Memory < 32<<20 {
		return bad("memory", "%d bytes, want at least 32 MiB", s.Memory)
	}
	if s.Kernel == "" {
		return bad("kernel", "empty, want the path of a kernel image")
	}
	if s.ScratchSize < 0 || (s.ScratchSize > 0 && s.ScratchSize < 8<<20) {
		return bad("scratch size", "%d bytes, want 0 (none) or at least 8 MiB", s.ScratchSize)
	}
	seen := map[string]bool{}
	if s.ScratchSize > 0 {
		seen[ScratchSerial] = true
	}
	for i, d := range s.Disks {
		if d.Path == "" {
			return bad(fmt.Sprintf("disk %d", i), "empty path")
		}
		if !serialRE.MatchString(d.Serial) {
			return bad(fmt.Sprintf("disk %s", d.Path), "serial %q, want 1-20 letters, digits, '.', '_' or '-'", d.Serial)
		}
		if seen[d.Serial] {
			return bad(fmt.Sprintf("disk %s", d.Path), "serial %q used twice (%q is the scratch disk's)", d.Serial, ScratchSerial)
		}
		seen[d.Serial] = true
	}
	tags := map[string]bool{}
	for i, sh := range s.Shares {
		if !tagRE.MatchString(sh.Tag) {
			return bad(fmt.Sprintf("share %d", i), "tag %q, want 1-36 letters, digits, '.', '_' or '-'", sh.Tag)
		}
		if tags[sh.Tag] {
			return bad(fmt.Sprintf("share %s", sh.Tag), "tag used twice")
		}
		tags[sh.Tag] = true
		if !filepath.IsAbs(sh.Source) {
			return bad(fmt.Sprintf("share %s", sh.Tag), "source %q, want an absolute path", sh.Source)
		}
	}
	for i, n := range s.Networks {
		if n.Socket == "" {
			return bad(fmt.Sprintf("network %d", i), "empty socket path")
		}
		if n.MAC != "" {
			if hw, err := net.ParseMAC(n.MAC); err != nil || len(hw) != 6 {
				return bad(fmt.Sprintf("network %d", i), "MAC %q, want six hex bytes such as 52:54:00:12:34:56", n.MAC)
			}
		}
	}
	return nil
}
