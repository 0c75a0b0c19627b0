package reconcile

import (
	"fmt"
	"strconv"
	"strings"
	"time"

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
// deploy.restart_policy (condition none, on-failure or any).
func ParseRestart(svc types.ServiceConfig) (RestartPolicy, error) {
	if r := svc.Restart; r != "" {
		mode, max, _ := strings.Cut(r, ":")
		p := RestartPolicy{Mode: mode}
		switch mode {
		case "no", "always", "unless-stopped":
			if max != "" {
				return p, fmt.Errorf("service %q: restart: %q takes no count: use on-failure:N for a bounded policy", svc.Name, r)
			}
		case "on-failure":
			if max != "" {
				n, err := strconv.Atoi(max)
				if err != nil || n < 0 {
					return p, fmt.Errorf("service %q: restart: %q: the count after on-failure: must be a number, 0 or more", svc.Name, r)
				}
				p.MaxRetries = n
			}
		default:
			return p, fmt.Errorf("service %q: restart: %q is not a policy: use no, always, on-failure[:N] or unless-stopped", svc.Name, r)
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
			return p, fmt.Errorf("service %q: deploy.restart_policy.condition: %q: use none, on-failure or any", svc.Name, rp.Condition)
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

// Health is a healthcheck as the supervisor runs it, with compose's and
// docker's defaults filled in.
type Health struct {
	Argv          []string
	Interval      time.Duration
	Timeout       time.Duration
	Retries       int
	StartPeriod   time.Duration
	StartInterval time.Duration
}

// ParseHealth returns the check to run, or nil when the service has none
// (no healthcheck, disable: true, or test NONE).
func ParseHealth(name string, hc *types.HealthCheckConfig) (*Health, error) {
	if hc == nil || hc.Disable || len(hc.Test) == 0 {
		return nil, nil
	}
	h := &Health{Interval: 30 * time.Second, Timeout: 30 * time.Second, Retries: 3, StartInterval: 5 * time.Second}
	switch test := hc.Test; test[0] {
	case "NONE":
		return nil, nil
	case "CMD":
		if len(test) < 2 {
			return nil, fmt.Errorf("service %q: healthcheck.test: CMD without a command", name)
		}
		h.Argv = append([]string{}, test[1:]...)
	case "CMD-SHELL":
		if len(test) < 2 {
			return nil, fmt.Errorf("service %q: healthcheck.test: CMD-SHELL without a command", name)
		}
		h.Argv = []string{"/bin/sh", "-c", strings.Join(test[1:], " ")}
	default:
		// A bare string is CMD-SHELL, as docker has it.
		h.Argv = []string{"/bin/sh", "-c", strings.Join(test, " ")}
	}
	set := func(d *types.Duration, to *time.Duration) {
		if d != nil && *d > 0 {
			*to = time.Duration(*d)
		}
	}
	set(hc.Interval, &h.Interval)
	set(hc.Timeout, &h.Timeout)
	set(hc.StartPeriod, &h.StartPeriod)
	set(hc.StartInterval, &h.StartInterval)
	if hc.Retries != nil && *hc.Retries > 0 {
		h.Retries = int(*hc.Retries)
	}
	return h, nil
}
