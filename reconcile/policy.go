package reconcile

import (
	"fmt"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
)

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
