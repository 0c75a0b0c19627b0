package planner

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
)

// RestartPolicy is compose's `restart` (or deploy.restart_policy) as the
// supervisor applies it when a service's process ends.
type RestartPolicy struct {
	// Mode is no, always, on-failure or unless-stopped.
	Mode string `json:"mode,omitempty"`
	// MaxRetries bounds on-failure restarts; 0 means no bound.
	MaxRetries int `json:"max_retries,omitempty"`
}

// ParseRestart reads a service's restart policy: `restart:` first, then
// deploy.restart_policy (condition none, on-failure or any). Its error
// names the field and says how to fix it.
func ParseRestart(svc types.ServiceConfig) (RestartPolicy, error) {
	if r := svc.Restart; r != "" {
		mode, max, _ := strings.Cut(r, ":")
		p := RestartPolicy{Mode: mode}
		switch mode {
		case "no", "always", "unless-stopped":
			if max != "" {
				return p, fmt.Errorf("restart: %q takes no count: use on-failure:N for a bounded policy", r)
			}
		case "on-failure":
			if max != "" {
				n, err := strconv.Atoi(max)
				if err != nil || n < 0 {
					return p, fmt.Errorf("restart: %q: the count after on-failure: must be a number, 0 or more", r)
				}
				p.MaxRetries = n
			}
		default:
			return p, fmt.Errorf("restart: %q is not a policy: use no, always, on-failure[:N] or unless-stopped", r)
		}
		return p, nil
	}
	if svc.Deploy != nil && svc.Deploy.RestartPolicy != nil {
		rp := svc.Deploy.RestartPolicy
		p := RestartPolicy{}
		switch rp.Condition {
		case "none":
			p.Mode = "no"
		case "on-failure":
			p.Mode = "on-failure"
		case "any", "":
			p.Mode = "always"
		default:
			return p, fmt.Errorf("deploy.restart_policy.condition: %q: use none, on-failure or any", rp.Condition)
		}
		if rp.MaxAttempts != nil {
			p.MaxRetries = int(*rp.MaxAttempts)
		}
		return p, nil
	}
	return RestartPolicy{Mode: "no"}, nil
}

// Restarts says whether a process that ended with code (nil: the VM died
// without reporting one) is started again after restarts earlier restarts.
// A stopped instance (stop, down, kill) never is.
func (p RestartPolicy) Restarts(code *int, restarts int, stopped bool) bool {
	if stopped {
		return false
	}
	switch p.Mode {
	case "always", "unless-stopped":
		return true
	case "on-failure":
		failed := code == nil || *code != 0
		return failed && (p.MaxRetries == 0 || restarts < p.MaxRetries)
	}
	return false
}
