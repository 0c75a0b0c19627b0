package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/planner"
)

// recorder is an Executor that records the order of Do and Await calls
// and fails the instances it is told to.
type recorder struct {
	mu    sync.Mutex
	calls []string
	fail  map[string]error // by instance: Do fails
	unmet map[string]error // by instance: Await fails
}

func (r *recorder) Do(_ context.Context, op planner.Op) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, "do "+op.Instance)
	return r.fail[op.Instance]
}

func (r *recorder) Await(_ context.Context, instance, condition string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, fmt.Sprintf("await %s %s", instance, condition))
	return r.unmet[instance]
}

func (r *recorder) did(instance string) bool { return slices.Contains(r.calls, "do "+instance) }

func (r *recorder) before(a, b string) bool {
	return slices.Index(r.calls, a) >= 0 && slices.Index(r.calls, a) < slices.Index(r.calls, b)
}

func loadYAML(t *testing.T, yaml string) *types.Project {
	t.Helper()
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  "/demo",
		ConfigFiles: []types.ConfigFile{{Filename: "compose.yaml", Content: []byte(yaml)}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SetProjectName("demo", true)
		o.SkipResolveEnvironment = true
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestExecute(t *testing.T) {
	p := loadYAML(t, `
services:
  db: {image: db}
  app: {image: app, depends_on: {db: {condition: service_healthy}}}
  web: {image: web, depends_on: [app]}
  side: {image: side, depends_on: {app: {condition: service_started, required: false}}}
`)
	plan, err := planner.Up(planner.Desired{Project: p}, planner.Observed{}, planner.Options{})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("in order, conditions awaited", func(t *testing.T) {
		r := &recorder{}
		if err := Execute(context.Background(), p, plan, r); err != nil {
			t.Fatal(err)
		}
		for _, pair := range [][2]string{
			{"do db-1", "await db-1 service_healthy"},
			{"await db-1 service_healthy", "do app-1"},
			{"do app-1", "await app-1 service_started"},
			{"await app-1 service_started", "do web-1"},
		} {
			if !r.before(pair[0], pair[1]) {
				t.Errorf("%q is not before %q in %q", pair[0], pair[1], r.calls)
			}
		}
	})

	t.Run("a failure skips what requires it", func(t *testing.T) {
		boom := errors.New("boom")
		r := &recorder{fail: map[string]error{"app-1": boom}}
		err := Execute(context.Background(), p, plan, r)
		if !errors.Is(err, boom) {
			t.Errorf("error %v, want the failed operation's", err)
		}
		if r.did("web-1") {
			t.Error("web-1 ran though app-1, which it requires, failed")
		}
		if !r.did("side-1") {
			t.Error("side-1 did not run though its dependency on app-1 is not required")
		}
	})

	t.Run("an unmet condition is the error", func(t *testing.T) {
		r := &recorder{unmet: map[string]error{"db-1": errors.New("is unhealthy")}}
		err := Execute(context.Background(), p, plan, r)
		if err == nil || !strings.Contains(err.Error(), "dependency failed to meet service_healthy: is unhealthy") {
			t.Errorf("error %v", err)
		}
		if r.did("app-1") || r.did("web-1") {
			t.Errorf("ran past an unmet condition: %q", r.calls)
		}
	})
}
