package planner

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Kind is what an operation does to one instance (one VM).
type Kind string

// The operations a plan can hold.
const (
	Create   Kind = "create"   // boot a new VM
	Recreate Kind = "recreate" // replace the VM: its config changed
	Start    Kind = "start"    // start the existing, stopped VM
	Restart  Kind = "restart"  // stop and start the VM, keeping its disk
	Stop     Kind = "stop"     // stop the VM, keeping it
	Remove   Kind = "remove"   // stop the VM if it runs, then delete it
	Nothing  Kind = "nothing"  // already as wanted
	Blocked  Kind = "blocked"  // cannot run; Reason says why
)

// Op is one operation of a plan.
type Op struct {
	ID       int    `json:"id"`
	Kind     Kind   `json:"kind"`
	Service  string `json:"service"`
	Number   int    `json:"number"`
	Instance string `json:"instance"` // <service>-<number>
	Reason   string `json:"reason"`
	// Changed names the fields that differ, for a recreate.
	Changed []string `json:"changed,omitempty"`
	// Hash is the config hash the instance has once the op is done.
	Hash string `json:"hash,omitempty"`
	// Shared names the instance's named volumes that are shared
	// directories, not disks (InstanceFields).
	Shared []string `json:"shared_volumes,omitempty"`
	// After lists the IDs of the operations that must finish first.
	After []int `json:"after,omitempty"`
	// Wave is 1 + the longest chain of operations before this one: the
	// operations of one wave may run in parallel.
	Wave int `json:"wave"`
}

// Plan is an ordered list of operations. Ops are sorted by wave, then
// service, then instance number, and numbered in that order.
type Plan struct {
	Project string `json:"project"`
	// Action is what the plan is for: up, down, start or stop.
	Action string `json:"action"`
	// Down plans run in reverse dependency order: an operation waits for
	// the operations of the services that depend on it.
	Down     bool     `json:"down,omitempty"`
	Ops      []Op     `json:"operations"`
	Warnings []string `json:"warnings,omitempty"`
	// Shares are the named volumes that become shared directories: the
	// executor removes their holders and moves their data before it
	// carries out any operation.
	Shares []NewShare `json:"new_shares,omitempty"`
}

// Waves returns the number of waves.
func (p *Plan) Waves() int {
	if len(p.Ops) == 0 {
		return 0
	}
	return p.Ops[len(p.Ops)-1].Wave
}

// Changes counts the operations that do something.
func (p *Plan) Changes() int {
	n := 0
	for _, op := range p.Ops {
		if op.Kind != Nothing {
			n++
		}
	}
	return n
}

// Blocked returns an error naming every service that cannot run, and
// why, on one line, or nil.
func (p *Plan) Blocked() error {
	var lines []string
	for _, op := range p.Ops {
		line := fmt.Sprintf("service %q: %s", op.Service, op.Reason)
		if op.Kind == Blocked && !slices.Contains(lines, line) {
			lines = append(lines, line)
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(lines, "; "))
}

// String renders the plan as `vmcompose plan` prints it. The text depends
// only on the plan, so it is stable across runs.
func (p *Plan) String() string {
	var b strings.Builder
	verb := p.Action
	switch {
	case len(p.Ops) == 0:
		fmt.Fprintf(&b, "project %s (%s): nothing to do\n", p.Project, verb)
	case p.Changes() == 0:
		fmt.Fprintf(&b, "project %s (%s): nothing to do, %d up to date\n", p.Project, verb, len(p.Ops))
	default:
		fmt.Fprintf(&b, "project %s (%s): %d %s in %d %s: %s\n", p.Project, verb,
			len(p.Ops), plural(len(p.Ops), "operation"), p.Waves(), plural(p.Waves(), "wave"), p.tally())
	}
	var wID, wKind, wInst int
	for _, op := range p.Ops {
		wID = max(wID, len(strconv.Itoa(op.ID)))
		wKind = max(wKind, len(op.Kind))
		wInst = max(wInst, len(op.Instance))
	}
	wave := 0
	for _, op := range p.Ops {
		if op.Wave != wave {
			wave = op.Wave
			fmt.Fprintf(&b, "wave %d\n", wave)
		}
		line := fmt.Sprintf("  %*d  %-*s  %-*s  %s", wID, op.ID, wKind, op.Kind, wInst, op.Instance, op.Reason)
		if len(op.After) > 0 {
			line += " (after " + joinInts(op.After) + ")"
		}
		b.WriteString(line + "\n")
	}
	if len(p.Shares) > 0 {
		b.WriteString("volumes\n")
		for _, sh := range p.Shares {
			fmt.Fprintf(&b, "  %s\n", sh)
		}
	}
	if len(p.Warnings) > 0 {
		b.WriteString("warnings\n")
		for _, warn := range p.Warnings {
			fmt.Fprintf(&b, "  %s\n", warn)
		}
	}
	return b.String()
}

// tally counts the operations by kind, in the order of the Kind constants.
func (p *Plan) tally() string {
	var parts []string
	for _, k := range []Kind{Create, Recreate, Start, Restart, Stop, Remove, Blocked, Nothing} {
		n := 0
		for _, op := range p.Ops {
			if op.Kind == k {
				n++
			}
		}
		if n > 0 && k == Nothing {
			parts = append(parts, fmt.Sprintf("%d unchanged", n))
		} else if n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, k))
		}
	}
	return strings.Join(parts, ", ")
}

func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

func joinInts(ids []int) string {
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = strconv.Itoa(id)
	}
	return strings.Join(s, ", ")
}

// String says what becomes of the volume: `"uploads" becomes shared by
// web and worker (web-1 has it as a disk: its data moves to a directory
// once it is removed)`.
func (s NewShare) String() string {
	line := fmt.Sprintf("%q becomes shared by %s: a directory on the host", s.Volume, s.Users())
	if len(s.Holders) > 0 {
		line += fmt.Sprintf(" (%s %s it as a disk: its data moves into the directory once %s removed)",
			strings.Join(s.Holders, ", "), map[bool]string{true: "has", false: "have"}[len(s.Holders) == 1], map[bool]string{true: "it is", false: "they are"}[len(s.Holders) == 1])
	}
	return line
}
