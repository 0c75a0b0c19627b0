package agent

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/yamux"
)

// PortName is the name of the virtio-serial port that carries the channel.
const PortName = "vmcompose.agent"

// VsockPort is the vsock port the guest listens on where the backend has
// vsock instead of virtio-serial.
const VsockPort = 1024

// ProtocolVersion is bumped on incompatible wire changes; Dial refuses a
// guest that speaks another version. 2: the service's stdin and terminal
// (Spec.OpenStdin, Spec.Rows and Cols, the input operation). 3: the sync
// operation (Request.Sync, SyncEntry, Response.Sync) and the restart
// operation (the service process restarted in place). 4: the prepare and
// launch operations (Start in two steps, PhasePrepared between them).
const ProtocolVersion = 4

// RingSize is how many bytes of each of the service's output streams the
// guest keeps for hosts that attach late or re-attach.
const RingSize = 1 << 20

// DefaultStopGracePeriod is how long Shutdown waits after the stop signal
// before it kills the service, when the Spec does not say.
const DefaultStopGracePeriod = 10 * time.Second

// maxHeader bounds a header so a corrupt length cannot make either side
// allocate without limit.
const maxHeader = 4 << 20

// Operations, the first field of every request header.
const (
	opHello    = "hello"
	opStart    = "start"
	opAttach   = "attach"
	opWait     = "wait"
	opSignal   = "signal"
	opShutdown = "shutdown"
	opExec     = "exec"
	opHealth   = "health"
	opResume   = "resume"
	opInput    = "input"
	opSync     = "sync"
	opRestart  = "restart"
	opPrepare  = "prepare"
	opLaunch   = "launch"
)

// Spec is what the service process is, as the image config says and compose
// overrides. The guest resolves it (argv, user names, PATH) against its own
// root filesystem, since only the guest has the image's /etc/passwd.
type Spec struct {
	// Image is the OCI image config's process part.
	Image ImageConfig `json:"image"`

	// Entrypoint and Command are compose's `entrypoint` and `command`. nil
	// means not set; a non-nil empty slice means set to empty (`entrypoint:
	// ""` or `[]`), which is different: see resolve.Argv for docker's rules.
	Entrypoint []string `json:"entrypoint"`
	Command    []string `json:"command"`

	// Env is compose's `environment` with `env_file` already merged in
	// (compose-go does that at load), as KEY=VALUE. It overrides the image's
	// Env key by key. A bare KEY (no "=") removes the key.
	Env []string `json:"env,omitempty"`

	// User is compose's `user`: "name", "uid", "name:group", "uid:gid" and
	// mixtures, resolved against the guest's /etc/passwd and /etc/group.
	// Empty means the image's User, then root.
	User string `json:"user,omitempty"`

	// GroupAdd is compose's `group_add`: supplementary groups (names from
	// the guest's /etc/group, or numbers) added to the user's.
	GroupAdd []string `json:"group_add,omitempty"`

	// ReadOnly is compose's `read_only`: the root filesystem is made
	// read-only once Start has written /etc/hosts, files and mount points.
	// Volumes, /tmp, /run and /dev/shm stay writable.
	ReadOnly bool `json:"read_only,omitempty"`

	// ShmSize is compose's `shm_size` in bytes: the size of /dev/shm;
	// 0 keeps the kernel's default (half the guest's memory).
	ShmSize int64 `json:"shm_size,omitempty"`

	// WorkingDir is compose's `working_dir`; empty means the image's, then
	// "/". It is created when missing, as docker does.
	WorkingDir string `json:"working_dir,omitempty"`

	// Hostname and Domainname are set in the guest kernel and written to
	// /etc/hostname. Hostname defaults to "localhost".
	Hostname   string `json:"hostname,omitempty"`
	Domainname string `json:"domainname,omitempty"`

	// Hosts are written to /etc/hosts after the localhost lines and a line
	// for the hostname.
	Hosts []HostEntry `json:"hosts,omitempty"`

	// DNS, DNSSearch and DNSOptions make /etc/resolv.conf. When all are
	// empty the image's resolv.conf is left as it is.
	DNS        []string `json:"dns,omitempty"`
	DNSSearch  []string `json:"dns_search,omitempty"`
	DNSOptions []string `json:"dns_options,omitempty"`

	// Mounts are volumes, mounted before the service starts, parents
	// before children.
	Mounts []Mount `json:"mounts,omitempty"`

	// Files are written before the service starts, after the mounts:
	// compose's secrets and configs.
	Files []File `json:"files,omitempty"`

	// Networks configure the guest's NICs, each found by the MAC address
	// the host gave it. Empty: the guest has only its loopback.
	Networks []Interface `json:"networks,omitempty"`

	// Sysctls are written to /proc/sys before the service starts, e.g.
	// "net.ipv4.ip_forward": "1". Any key is allowed: the VM has its own
	// kernel.
	Sysctls map[string]string `json:"sysctls,omitempty"`

	// Ulimits apply to the service and to exec and healthcheck processes.
	Ulimits []Ulimit `json:"ulimits,omitempty"`

	// Init is compose's `init`. vminit is itself a reaping, signal-forwarding
	// PID 1 (what `init: true` gives in docker), and the service process is
	// never PID 1, so both values behave as docker's `init: true`.
	Init *bool `json:"init,omitempty"`

	// Tty is compose's `tty`: the service's stdin, stdout and stderr are
	// one terminal of Rows x Cols (24x80 when zero; TERM=xterm unless
	// set), and all its output arrives on Stdout. What a host writes
	// through Client.Input is typed into it when OpenStdin is set too;
	// otherwise nothing is, which keeps a shell waiting, as in docker.
	Tty  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`

	// OpenStdin is compose's `stdin_open` (docker run's -i): the service's
	// stdin is a pipe (the terminal with Tty) that stays open for hosts to
	// write through Client.Input, until one closes it. Without it stdin is
	// /dev/null.
	OpenStdin bool `json:"stdin_open,omitempty"`

	// StopSignal is compose's `stop_signal`; empty means the image's, then
	// SIGTERM.
	StopSignal string `json:"stop_signal,omitempty"`

	// StopGracePeriod is compose's `stop_grace_period`; nil means
	// DefaultStopGracePeriod. Zero kills at once after the stop signal.
	StopGracePeriod *time.Duration `json:"stop_grace_period,omitempty"`
}

// ImageConfig is the process part of an OCI image config.
type ImageConfig struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	User       string   `json:"user,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	StopSignal string   `json:"stop_signal,omitempty"`
}

// HostEntry is one /etc/hosts line.
type HostEntry struct {
	IP    string   `json:"ip"`
	Names []string `json:"names"`
}

// Mount types.
const (
	// MountDisk is an ext4 disk the host attached with virtio serial
	// Source (at most 20 bytes): a named volume.
	MountDisk = "disk"
	// MountVirtiofs is a virtiofs share tagged Source (at most 36 bytes):
	// a bind mount.
	MountVirtiofs = "virtiofs"
	// MountTmpfs is a tmpfs; Source is ignored.
	MountTmpfs = "tmpfs"
	// MountVolumeShare is a named volume shared by several VMs: a
	// virtiofs share tagged Source whose root holds the volume's data in
	// ShareData, which is what shows at Target, and ShareMeta, where the
	// VMs that mount it agree on who seeds it.
	MountVolumeShare = "volume-share"
)

// The layout of a shared volume's root (MountVolumeShare).
const (
	// ShareData holds the volume's data.
	ShareData = "data"
	// ShareMeta holds ShareLock and ShareSeeded.
	ShareMeta = ".vmcompose"
	// ShareLock is the file a VM holds flock(2)ed while it decides
	// whether to seed the volume and seeds it.
	ShareLock = "lock"
	// ShareSeeded exists once the volume had its first read-write mount
	// (seeded with the image's content or not): no later mount seeds it,
	// even when its data was emptied meanwhile.
	ShareSeeded = "seeded"
)

// Mount is one volume in the guest.
type Mount struct {
	Type   string `json:"type"`
	Source string `json:"source,omitempty"`
	// Target is the absolute path in the guest; it is created if missing.
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only,omitempty"`
	// Options are extra mount options, e.g. "size=64m,mode=1777" for a
	// tmpfs.
	Options string `json:"options,omitempty"`
	// Subpath, for a virtiofs mount, is the entry of the share to mount at
	// Target instead of the share's root: a file or a directory, which
	// Target is made as when it is missing. For a disk, it is the
	// directory of its file system to mount (a volume's data directory,
	// vm.VolumeData), empty for the root. The share or the disk itself
	// shows nowhere else in the guest.
	Subpath string `json:"subpath,omitempty"`
	// NoCopy is compose's `volume.nocopy`. Without it, an empty volume
	// (an empty Subpath directory or ShareData; nothing but lost+found at
	// a disk's root) mounted read-write for the first time gets a copy of
	// what the image has at Target, with its owner and mode, as docker
	// does. A disk with a Subpath and a shared volume remember their first
	// mount (ShareSeeded), and are not seeded again.
	NoCopy bool `json:"nocopy,omitempty"`
}

// SecretsDir is where the guest puts compose's secrets: a tmpfs of its
// own, mounted before the first secret is written and made read-only
// after the last.
const SecretsDir = "/run/secrets"

// File is a file written into the guest: a secret or a config.
type File struct {
	// Path is absolute; missing directories are created (mode 0755).
	Path string `json:"path"`
	// Content travels to the guest only: the host keeps it in memory and
	// never records it (see reconcile.InstanceState), and the guest never
	// logs it.
	Content []byte `json:"content"`
	// Mode defaults to 0444, compose's default for secrets and configs.
	Mode uint32 `json:"mode,omitempty"`
	// UID and GID own the file (default root).
	UID int `json:"uid,omitempty"`
	GID int `json:"gid,omitempty"`
	// Secret keeps the file off every disk: under SecretsDir it is written
	// to that tmpfs; elsewhere (an absolute secret target) it is written
	// to a tmpfs of its own and bind-mounted read-only at Path.
	Secret bool `json:"secret,omitempty"`
}

// Interface is one NIC's configuration.
type Interface struct {
	// MAC finds the NIC ("52:54:00:12:34:56").
	MAC string `json:"mac"`
	// Addresses in CIDR form: "10.0.0.5/24", "fd00::5/64".
	Addresses []string `json:"addresses,omitempty"`
	// Gateway, when set, is the next hop of the default route through
	// this NIC (an IPv4 or IPv6 address).
	Gateway string `json:"gateway,omitempty"`
	// MTU, when > 0, replaces the NIC's default.
	MTU int `json:"mtu,omitempty"`
}

// Ulimit is one resource limit; Name is compose's ("nofile", "nproc",
// "core", "memlock", "stack", ...). -1 means unlimited.
type Ulimit struct {
	Name string `json:"name"`
	Soft int64  `json:"soft"`
	Hard int64  `json:"hard"`
}

// ExecSpec is a process run next to the service (`vmcompose exec`). Empty
// fields default to the service's: user, working directory; Env overrides
// the service's environment key by key.
type ExecSpec struct {
	Argv       []string `json:"argv"`
	Env        []string `json:"env,omitempty"`
	User       string   `json:"user,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	// Tty gives the process a pseudo-terminal of Rows x Cols; its stdout
	// and stderr are then one stream (Stdout).
	Tty  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
}

// HealthResult is the outcome of one healthcheck command.
type HealthResult struct {
	// ExitCode is the command's exit status; -1 when it timed out.
	ExitCode int `json:"exit_code"`
	// Output is stdout and stderr together, at most 4096 bytes (docker's
	// limit), the first bytes kept.
	Output   string `json:"output"`
	TimedOut bool   `json:"timed_out,omitempty"`
}

// ExitStatus is how a process ended.
type ExitStatus struct {
	// Code is the exit code, or 128+n when killed by signal n (docker's
	// convention).
	Code int `json:"code"`
	// Signal is the name of the signal that killed it, if one did.
	Signal string `json:"signal,omitempty"`
}

// Phase is where the service is in its life.
type Phase string

const (
	// PhaseTemplate: the guest booted as a template (vminit.template on
	// the kernel command line): its kernel and vminit are up, its disks
	// and NICs are not. The VMM saves it in this phase and restores copies
	// of it with their own devices; Resume, which Dial sends, finishes the
	// boot of each copy.
	PhaseTemplate Phase = "template"
	// PhaseBooting: vminit has not finished setting up the root yet.
	PhaseBooting Phase = "booting"
	// PhaseReady: waiting for Start.
	PhaseReady Phase = "ready"
	// PhasePrepared: Prepare set the guest up (mounts, files, NICs) and
	// Launch has not started the process yet; syncs and execs work.
	PhasePrepared Phase = "prepared"
	// PhaseRunning: the service process runs.
	PhaseRunning Phase = "running"
	// PhaseStopping: Shutdown was asked; the stop signal has been sent.
	PhaseStopping Phase = "stopping"
	// PhaseExited: the service process has exited; see Status.Exit.
	PhaseExited Phase = "exited"
	// PhaseFailed: the guest could not boot; see Status.BootError.
	PhaseFailed Phase = "failed"
)

// Status is what the guest reports on hello.
type Status struct {
	Version   int         `json:"version"`
	Phase     Phase       `json:"phase"`
	Pid       int         `json:"pid,omitempty"`
	Exit      *ExitStatus `json:"exit,omitempty"`
	BootError string      `json:"boot_error,omitempty"`
	// Uptime is the guest's time since boot.
	Uptime time.Duration `json:"uptime,omitempty"`
}

// Request is a stream's first header, host to guest. It is exported for
// vminit; hosts use Client.
type Request struct {
	Op      string        `json:"op"`
	Spec    *Spec         `json:"spec,omitempty"`
	Stream  string        `json:"stream,omitempty"` // attach: "stdout" or "stderr"
	Offset  int64         `json:"offset,omitempty"` // attach: first byte wanted
	Signal  string        `json:"signal,omitempty"` // signal
	Exec    *ExecSpec     `json:"exec,omitempty"`
	Argv    []string      `json:"argv,omitempty"`    // health
	Timeout time.Duration `json:"timeout,omitempty"` // health
	Resume  *Resume       `json:"resume,omitempty"`
	Sync    *SyncSpec     `json:"sync,omitempty"`
}

// Resume is what a guest restored from a template takes from the host
// before it sets up its devices and root: what every copy of one saved
// template would otherwise share.
type Resume struct {
	// Entropy is mixed into the guest's random number generator, which is
	// then reseeded: copies of a template would otherwise draw the same
	// numbers.
	Entropy []byte `json:"entropy"`
	// Time is the host's clock: a copy's clock shows the time its
	// template was saved.
	Time time.Time `json:"time"`
}

// Response is a stream's first header, guest to host. It is exported for
// vminit; hosts use Client.
type Response struct {
	Error  string        `json:"error,omitempty"`
	Code   string        `json:"code,omitempty"` // one of the err* codes below
	Status *Status       `json:"status,omitempty"`
	Offset int64         `json:"offset,omitempty"` // attach: first byte that follows
	Exit   *ExitStatus   `json:"exit,omitempty"`
	Health *HealthResult `json:"health,omitempty"`
	Pid    int           `json:"pid,omitempty"` // exec, restart
	Sync   *SyncResult   `json:"sync,omitempty"`
}

// Error codes in Response.Code, mapped to the sentinel errors.
const (
	codeNotStarted     = "not_started"
	codeExited         = "exited"
	codeAlreadyStarted = "already_started"
	codeBootFailed     = "boot_failed"
	codeInvalid        = "invalid"
	codeNotFound       = "command_not_found"
	codeNotExecutable  = "command_not_executable"
)

var (
	// ErrNotStarted: the operation needs a started service.
	ErrNotStarted = errors.New("service not started")
	// ErrExited: the service process has exited already.
	ErrExited = errors.New("service exited")
	// ErrAlreadyStarted: Start was called on a guest whose service was
	// already started (it runs, or it ran and exited).
	ErrAlreadyStarted = errors.New("service already started")
	// ErrBootFailed: the guest could not set up its root; the message says
	// why. Retrying cannot help.
	ErrBootFailed = errors.New("guest boot failed")
	// ErrInvalid: the guest refused the request's content (unknown user,
	// bad sysctl, command not found...). Retrying cannot help.
	ErrInvalid = errors.New("invalid request")
	// ErrCommandNotFound: the command to start is not in the guest
	// (docker's exit status 127). Retrying cannot help.
	ErrCommandNotFound = errors.New("command not found")
	// ErrCommandNotExecutable: the command is there but cannot be run: not
	// executable, a directory, not a format the kernel runs (docker's
	// exit status 126). Retrying cannot help.
	ErrCommandNotExecutable = errors.New("command cannot be run")
)

// CodeOf returns the wire code for err, for vminit's responses.
func CodeOf(err error) string {
	switch {
	case errors.Is(err, ErrNotStarted):
		return codeNotStarted
	case errors.Is(err, ErrExited):
		return codeExited
	case errors.Is(err, ErrAlreadyStarted):
		return codeAlreadyStarted
	case errors.Is(err, ErrBootFailed):
		return codeBootFailed
	case errors.Is(err, ErrInvalid):
		return codeInvalid
	case errors.Is(err, ErrCommandNotFound):
		return codeNotFound
	case errors.Is(err, ErrCommandNotExecutable):
		return codeNotExecutable
	}
	return ""
}

// err turns a response's error back into an error wrapping the sentinel.
func (r *Response) err() error {
	if r.Error == "" {
		return nil
	}
	var sentinel error
	switch r.Code {
	case codeNotStarted:
		sentinel = ErrNotStarted
	case codeExited:
		sentinel = ErrExited
	case codeAlreadyStarted:
		sentinel = ErrAlreadyStarted
	case codeBootFailed:
		sentinel = ErrBootFailed
	case codeInvalid:
		sentinel = ErrInvalid
	case codeNotFound:
		sentinel = ErrCommandNotFound
	case codeNotExecutable:
		sentinel = ErrCommandNotExecutable
	}
	if sentinel == nil {
		return &GuestError{Msg: r.Error}
	}
	return &GuestError{Msg: r.Error, sentinel: sentinel}
}

// GuestError is an error reported by the guest.
type GuestError struct {
	Msg      string
	sentinel error
}

func (e *GuestError) Error() string { return "guest: " + e.Msg }
func (e *GuestError) Unwrap() error { return e.sentinel }

// WriteHeader writes v as one header: length, then JSON.
func WriteHeader(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	_, err = w.Write(buf)
	return err
}

// ReadHeader reads one header into v.
func ReadHeader(r io.Reader, v any) error {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxHeader {
		return fmt.Errorf("header of %d bytes, more than %d", size, maxHeader)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return noEOF(err)
	}
	return json.Unmarshal(b, v)
}

// Exec frame types, also those of the input operation (host to guest
// only). A frame is one type byte, a 4-byte big-endian length and the
// payload.
const (
	// Host to guest.
	FrameStdin    byte = 0 // payload: bytes for the process's stdin
	FrameStdinEOF byte = 4 // no payload: close the process's stdin
	FrameResize   byte = 5 // payload: rows, cols as two big-endian uint16
	FrameSignal   byte = 6 // payload: signal name
	// Guest to host.
	FrameStdout byte = 1 // payload: output (all output with a tty)
	FrameStderr byte = 2 // payload: error output
	FrameExit   byte = 3 // payload: ExitStatus JSON; the last frame
)

// maxFrame bounds one frame's payload.
const maxFrame = 1 << 20

// WriteFrame writes one exec frame. Callers serialise writes.
func WriteFrame(w io.Writer, typ byte, payload []byte) error {
	buf := make([]byte, 5+len(payload))
	buf[0] = typ
	binary.BigEndian.PutUint32(buf[1:], uint32(len(payload)))
	copy(buf[5:], payload)
	_, err := w.Write(buf)
	return err
}

// ReadFrame reads one exec frame, reusing buf when it is large enough.
func ReadFrame(r io.Reader, buf []byte) (typ byte, payload []byte, err error) {
	var h [5]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	size := binary.BigEndian.Uint32(h[1:])
	if size > maxFrame {
		return 0, nil, fmt.Errorf("frame of %d bytes, more than %d", size, maxFrame)
	}
	if int(size) > cap(buf) {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	if _, err := io.ReadFull(r, buf); err != nil {
		return 0, nil, noEOF(err)
	}
	return h[0], buf, nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// YamuxConfig is the multiplexer configuration both sides use. Keepalives
// detect a host or guest that went away without closing the stream (a
// virtio-serial port reports no hang-up to a blocked writer); the write
// timeout is generous because a TCG guest can be slow.
func YamuxConfig() *yamux.Config {
	c := yamux.DefaultConfig()
	c.LogOutput = io.Discard
	c.KeepAliveInterval = 10 * time.Second
	c.ConnectionWriteTimeout = 30 * time.Second
	c.StreamOpenTimeout = 30 * time.Second
	c.StreamCloseTimeout = 30 * time.Second
	return c
}
