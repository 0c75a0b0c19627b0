package reconcile

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/internal/atomicfile"
	"github.com/vmcompose/vmcompose/network/netproc"
	"github.com/vmcompose/vmcompose/oci"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/vm"
)

// StateFile is the name of a project's recorded state in its state dir.
const StateFile = "state.json"

// State is what vmcompose has recorded about a project's VMs. It is a
// record, not the truth: Observe checks it against the VM driver.
type State struct {
	Project   string          `json:"project"`
	Instances []InstanceState `json:"instances"`
}

// InstanceState is one service VM as the supervisor last saw it.
type InstanceState struct {
	planner.Instance
	// VM is the VM's name in the driver (the instance's name).
	VM string `json:"vm"`
	// Phase is created, starting, running or exited; the planner's State
	// (running or stopped) is derived from the driver, not from it.
	Phase      string    `json:"phase,omitempty"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	ExitCode   *int      `json:"exit_code,omitempty"`
	// Signal is the signal that killed the VM's VMM process under its
	// service, which then could not say how it ended: ExitCode is
	// 128+Signal, as docker reports a killed container.
	Signal   int      `json:"signal,omitempty"`
	Error    string   `json:"error,omitempty"`
	Health   string   `json:"health,omitempty"` // starting, healthy, unhealthy; empty without a healthcheck
	Restarts int      `json:"restarts,omitempty"`
	Stopped  bool     `json:"stopped,omitempty"` // stopped on request: no restart policy applies
	Image    string   `json:"image,omitempty"`
	Command  []string `json:"command,omitempty"`
	// Guest is the spec the guest starts from, its files without their
	// contents (WriteState drops them): the supervisor keeps those in
	// memory and reads them from the project again when it must.
	Guest agent.Spec `json:"guest"`
	// Healthcheck and Restart are what the supervisor needs to run the
	// instance without the compose file (after it restarted).
	Healthcheck *types.HealthCheckConfig `json:"healthcheck,omitempty"`
	Restart     planner.RestartPolicy    `json:"restart_policy"`
	// Network joins the instance to the project's networks again.
	Network *netproc.Record `json:"network,omitempty"`
	// NetworkLost is set when the network process its VM's NICs were
	// connected to ended under the running VM, which was then ended too
	// and restarted or not by its restart policy (see
	// Supervisor.networkLost). ps shows it; start, restart and up clear
	// it.
	NetworkLost *netproc.Loss `json:"network_lost,omitempty"`
}

// StateDir returns the state dir of a project: $XDG_STATE_HOME/vmcompose/
// <project>, or ~/.local/state/vmcompose/<project>.
func StateDir(project string) (string, error) {
	base := os.Getenv("XDG_STATE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("finding the state directory: %w (set XDG_STATE_HOME)", err)
		}
		base = filepath.Join(home, ".local", "state")
	}
	return filepath.Join(base, "vmcompose", project), nil
}

// VMRoot is where the VMs of the project whose state dir is dir live.
func VMRoot(dir string) string { return filepath.Join(dir, "vms") }

// ReadState reads the recorded state in dir. A missing file is an empty
// state: nothing was ever recorded.
func ReadState(dir string) (State, error) {
	path := filepath.Join(dir, StateFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return State{}, nil
	}
	if err != nil {
		return State{}, fmt.Errorf("reading state: %w", err)
	}
	var s State
	if err := json.Unmarshal(b, &s); err != nil {
		return State{}, fmt.Errorf("reading state %s: %w (move the file away to start from an empty state)", path, err)
	}
	return s, nil
}

// WriteState records s in dir atomically: a temporary file in the same
// directory, fsync, rename, fsync of the directory. A reader sees the old
// state or the new one, never a mix.
// The contents of the guests' files (secrets, configs) are never
// written: the instances' specs are recorded without them.
func WriteState(dir string, s State) error {
	s.Instances = slices.Clone(s.Instances)
	for i := range s.Instances {
		g := &s.Instances[i].Guest
		g.Files = slices.Clone(g.Files)
		for j := range g.Files {
			g.Files[j].Content = nil
		}
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(dir, StateFile), b, 0o600); err != nil {
		return fmt.Errorf("writing state: %w", err)
	}
	return nil
}

// Observation is the state record checked against the driver: one entry
// per instance VM that exists, in VM name order, with the VM's status.
type Observation struct {
	Instances []InstanceState
	VMs       map[string]vm.Status
}

// Observed returns what the planner takes.
func (o Observation) Observed() planner.Observed {
	out := planner.Observed{Instances: []planner.Instance{}}
	for _, in := range o.Instances {
		out.Instances = append(out.Instances, in.Instance)
	}
	return out
}

// ObserveVMs reads the state record in dir and checks it against what the
// driver has: instances whose VM is gone are dropped, VMs that the record
// lacks (a supervisor died between creating a VM and recording it) appear
// with an empty hash, so that the planner replaces them, and the running
// or stopped state always comes from the driver.
func ObserveVMs(ctx context.Context, dir string, d vm.Driver) (Observation, error) {
	s, err := ReadState(dir)
	if err != nil {
		return Observation{}, err
	}
	recorded := map[string]InstanceState{}
	for _, in := range s.Instances {
		recorded[in.VM] = in
	}
	var statuses []vm.Status
	if l, ok := d.(vm.Lister); ok {
		statuses, err = l.List(ctx)
		if err != nil {
			return Observation{}, err
		}
	} else {
		for _, in := range s.Instances {
			st, err := d.Inspect(ctx, in.VM)
			if errors.Is(err, vm.ErrNotFound) {
				continue
			}
			if err != nil {
				return Observation{}, err
			}
			statuses = append(statuses, st)
		}
	}
	o := Observation{VMs: map[string]vm.Status{}}
	for _, st := range statuses {
		service, number, ok := planner.ParseInstance(st.Name)
		if !ok {
			continue
		}
		in, ok := recorded[st.Name]
		if !ok {
			in = InstanceState{VM: st.Name, Instance: planner.Instance{Service: service, Number: number}}
		}
		in.State = planner.Stopped
		if st.State == vm.StateRunning {
			in.State = planner.Running
		}
		o.VMs[st.Name] = st
		o.Instances = append(o.Instances, in)
	}
	return o, nil
}

// Observe returns what exists now, as the planner takes it, from the
// state record in dir alone (no driver at hand: the record may be stale).
func Observe(dir string) (planner.Observed, error) {
	s, err := ReadState(dir)
	if err != nil {
		return planner.Observed{}, err
	}
	out := planner.Observed{}
	for _, in := range s.Instances {
		out.Instances = append(out.Instances, in.Instance)
	}
	return out, nil
}

// LocalDigests returns the digest of every service image the store has,
// without contacting a registry, so that a dry run plans with the same
// hashes as up.
func LocalDigests(ctx context.Context, store *oci.Store, project string, services types.Services) map[string]string {
	out := map[string]string{}
	for name, svc := range services {
		ref := planner.ImageName(project, svc)
		if ref == "" {
			continue
		}
		img, err := store.Pull(ctx, ref, oci.WithPolicy(oci.PullNever), oci.WithPlatform(svc.Platform))
		if err == nil {
			out[name] = img.Digest.String()
		}
	}
	return out
}
