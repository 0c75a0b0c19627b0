package planner

import (
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
)

func TestRestartPolicy(t *testing.T) {
	zero, one := 0, 1
	for _, tc := range []struct {
		restart  string
		code     *int
		restarts int
		stopped  bool
		want     bool
	}{
		{"", &one, 0, false, false},
		{"no", &one, 0, false, false},
		{"always", &zero, 5, false, true},
		{"always", &zero, 0, true, false},
		{"unless-stopped", nil, 0, false, true},
		{"on-failure", &zero, 0, false, false},
		{"on-failure", &one, 100, false, true},
		{"on-failure", nil, 0, false, true},
		{"on-failure:2", &one, 1, false, true},
		{"on-failure:2", &one, 2, false, false},
	} {
		p, err := ParseRestart(types.ServiceConfig{Name: "s", Restart: tc.restart})
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Restarts(tc.code, tc.restarts, tc.stopped); got != tc.want {
			t.Errorf("%q after %d restarts (stopped %v): %v, want %v", tc.restart, tc.restarts, tc.stopped, got, tc.want)
		}
	}
	for _, bad := range []string{"sometimes", "always:3", "on-failure:x"} {
		if _, err := ParseRestart(types.ServiceConfig{Name: "s", Restart: bad}); err == nil || !strings.Contains(err.Error(), "restart: ") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	max := uint64(3)
	p, err := ParseRestart(types.ServiceConfig{Deploy: &types.DeployConfig{RestartPolicy: &types.RestartPolicy{Condition: "on-failure", MaxAttempts: &max}}})
	if err != nil || p != (RestartPolicy{Mode: "on-failure", MaxRetries: 3}) {
		t.Errorf("deploy.restart_policy: %+v, %v", p, err)
	}
}
