package supervisor

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/internal/errcode"
	"github.com/vmcompose/vmcompose/internal/unixsock"
	"github.com/vmcompose/vmcompose/network"
	"github.com/vmcompose/vmcompose/oci"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/reconcile"
)

// The CLI talks to the supervisor with HTTP/1.1 over the unix socket
// <state dir>/supervisor.sock: JSON requests, and newline-delimited JSON
// Events in answer to the operations that take time (up, down, start, stop,
// restart, kill), so the CLI prints progress as it happens. exec takes over
// the connection after its answer and carries the guest agent's exec frames
// (agent.WriteFrame) both ways; sync takes it over too, for the agent's
// sync entries one way and the answer (SyncAnswer) the other. net/http is in the standard library, well
// kept, streams, and lets exec hijack the connection; net/rpc streams
// nothing and is frozen.
//
// Every request carries the project's load options (files, directories, the
// CLI's environment): the supervisor loads the compose file itself, exactly
// as the CLI did, so both compute the same config hashes.

// SocketName is the supervisor's socket in the state dir.
const SocketName = "supervisor.sock"

// Request is what every supervisor operation takes.
type Request struct {
	Load     project.Options `json:"load"`
	Services []string        `json:"services,omitempty"`
	// up
	NoDeps        bool `json:"no_deps,omitempty"`
	ForceRecreate bool `json:"force_recreate,omitempty"`
	// AlwaysRecreateDeps extends ForceRecreate to dependencies.
	AlwaysRecreateDeps bool           `json:"always_recreate_deps,omitempty"`
	NoRecreate         bool           `json:"no_recreate,omitempty"`
	RemoveOrphans      bool           `json:"remove_orphans,omitempty"`
	Scale              map[string]int `json:"scale,omitempty"`
	Wait               bool           `json:"wait,omitempty"`
	// RunFor makes an up the start of the dependencies of a one-off VM
	// (`vmcompose run`) of that service: Services are its dependencies, and
	// the up returns once its depends_on conditions hold on them.
	RunFor string `json:"run_for,omitempty"`
	// Timeout (seconds) bounds a stop; negative means the service's
	// stop_grace_period.
	Timeout int `json:"timeout"`
	// down
	Volumes bool `json:"volumes,omitempty"`
	// kill
	Signal string `json:"signal,omitempty"`
	// exec
	Index int             `json:"index,omitempty"`
	Exec  *agent.ExecSpec `json:"exec,omitempty"`
	// sync (with Index)
	Sync *agent.SyncSpec `json:"sync,omitempty"`
}

// Event is one line of progress; the last one of an answer has Done set,
// and Error when the operation failed, Service naming the service at fault
// and Code the sentinel the error wraps (see ErrorCodes).
type Event struct {
	Instance string `json:"instance,omitempty"`
	Message  string `json:"message,omitempty"`
	Done     bool   `json:"done,omitempty"`
	Error    string `json:"error,omitempty"`
	Service  string `json:"service,omitempty"`
	Code     string `json:"code,omitempty"`
}

// ErrorCodes are the sentinels an operation's error may wrap, by their
// code in Event.Code, so that the CLI's errors.Is sees what the
// supervisor's saw. Add codes at will: a CLI that does not know one keeps
// the message.
var ErrorCodes = errcode.Table{
	{Code: "command_not_found", Err: agent.ErrCommandNotFound},
	{Code: "command_not_executable", Err: agent.ErrCommandNotExecutable},
	{Code: "boot_failed", Err: agent.ErrBootFailed},
	{Code: "port_in_use", Err: network.ErrPortInUse},
	{Code: "image_not_found", Err: oci.ErrNotFound},
	{Code: "unauthorized", Err: oci.ErrUnauthorized},
	{Code: "terminal", Err: reconcile.ErrTerminal},
	{Code: "canceled", Err: context.Canceled},
	{Code: "deadline_exceeded", Err: context.DeadlineExceeded},
}

// Err is the error of a final event, wrapping its code's sentinel; nil
// when the operation succeeded.
func (e Event) Err() error {
	if e.Error == "" {
		return nil
	}
	return ErrorCodes.Rebuild(e.Error, e.Code)
}

// SocketPath is the supervisor's socket of the project whose state dir is
// dir.
func SocketPath(dir string) string { return filepath.Join(dir, SocketName) }

// DialSupervisor connects to the supervisor of the project whose state dir
// is dir.
func DialSupervisor(ctx context.Context, dir string) (net.Conn, error) {
	return unixsock.Dial(ctx, dir, SocketName)
}

// listenSupervisor replaces a stale socket and listens.
func listenSupervisor(dir string) (*net.UnixListener, error) {
	os.Remove(SocketPath(dir))
	l, err := unixsock.Listen(dir, SocketName)
	if err != nil {
		return nil, fmt.Errorf("supervisor socket: %w", err)
	}
	return l, nil
}
