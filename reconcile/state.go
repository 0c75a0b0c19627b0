package reconcile

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/vmcompose/vmcompose/planner"
)

// StateFile is the name of a project's recorded state in its state dir.
const StateFile = "state.json"

// State is what vmcompose has recorded about a project's VMs.
type State struct {
	Project   string             `json:"project"`
	Instances []planner.Instance `json:"instances"`
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

// Observe returns what exists now, as the planner takes it. Until VMs are
// supervised it is exactly the recorded state.
func Observe(dir string) (planner.Observed, error) {
	s, err := ReadState(dir)
	if err != nil {
		return planner.Observed{}, err
	}
	return planner.Observed{Instances: s.Instances}, nil
}
