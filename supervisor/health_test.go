package supervisor

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/reconcile"
)

// scriptedHealth answers healthchecks from a script of exit codes and
// records when each ran on the fake clock.
type scriptedHealth struct {
	mu    sync.Mutex
	codes []int
	ran   []time.Duration
	clock *fakeClock
	done  chan struct{}
}

func (h *scriptedHealth) Health(ctx context.Context, argv []string, timeout time.Duration) (agent.HealthResult, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ran = append(h.ran, h.clock.elapsed())
	if len(h.codes) == 0 {
		close(h.done)
		<-ctx.Done()
		return agent.HealthResult{}, ctx.Err()
	}
	code := h.codes[0]
	h.codes = h.codes[1:]
	return agent.HealthResult{ExitCode: code}, nil
}

// fakeClock advances by exactly the duration each timer asks for.
type fakeClock struct {
	mu    sync.Mutex
	start time.Time
	now   time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	c.now = c.now.Add(d)
	now := c.now
	c.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- now
	return ch
}
func (c *fakeClock) elapsed() time.Duration { return c.Now().Sub(c.start) }

// TestHealthLoop: failures during start_period do not count (checks come
// every start_interval then), a success makes the service healthy, and
// retries failures in a row make it unhealthy.
func TestHealthLoop(t *testing.T) {
	for _, tc := range []struct {
		name   string
		health reconcile.Health
		codes  []int
		want   string // health after each check
		times  string // when each check ran
	}{{
		name:   "failures in the start period do not count",
		health: reconcile.Health{Interval: 10 * time.Second, Retries: 2, StartPeriod: 5 * time.Second, StartInterval: time.Second},
		codes:  []int{1, 1, 1, 1, 0, 1, 1},
		want:   "starting,starting,starting,starting,healthy,healthy,unhealthy",
		times:  "1s 2s 3s 4s 5s 15s 25s",
	}, {
		name:   "retries failures in a row",
		health: reconcile.Health{Interval: 2 * time.Second, Retries: 3, StartInterval: time.Second},
		codes:  []int{1, 1, 0, 1, 1, 1, 0},
		want:   "starting,starting,healthy,healthy,healthy,unhealthy,healthy",
		times:  "2s 4s 6s 8s 10s 12s 14s",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			clock := &fakeClock{start: time.Unix(1000, 0), now: time.Unix(1000, 0)}
			s := NewSupervisor(t.TempDir(), nil)
			s.Now, s.After = clock.Now, clock.After
			h := tc.health
			in := &instance{s: s, health: &h, changed: make(chan struct{}), rec: reconcile.InstanceState{VM: "web-1", Health: "starting"}}
			s.insts["web-1"] = in
			checker := &scriptedHealth{codes: tc.codes, clock: clock, done: make(chan struct{})}
			var seen []string
			// Record the health after each check by watching the changes
			// and the checks.
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			wrapped := checkFunc(func(ctx context.Context, argv []string, timeout time.Duration) (agent.HealthResult, error) {
				if n := len(checker.ran); n > 0 && n <= len(tc.codes) {
					r, _ := in.snapshot()
					seen = append(seen, r.Health)
				}
				return checker.Health(ctx, argv, timeout)
			})
			go s.healthLoop(ctx, in, wrapped)
			select {
			case <-checker.done:
			case <-time.After(10 * time.Second):
				t.Fatal("the health loop stalled")
			}
			if got := strings.Join(seen, ","); got != tc.want {
				t.Errorf("health %s, want %s", got, tc.want)
			}
			var times []string
			for _, d := range checker.ran[:len(tc.codes)] {
				times = append(times, d.String())
			}
			if got := strings.Join(times, " "); got != tc.times {
				t.Errorf("checks at %s, want %s", got, tc.times)
			}
		})
	}
}

type checkFunc func(ctx context.Context, argv []string, timeout time.Duration) (agent.HealthResult, error)

func (f checkFunc) Health(ctx context.Context, argv []string, timeout time.Duration) (agent.HealthResult, error) {
	return f(ctx, argv, timeout)
}
