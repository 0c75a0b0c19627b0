package planner_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/planner"
)

func TestCycleErrorPrintsThePath(t *testing.T) {
	services := types.Services{
		"a": service("a", "b"),
		"b": service("b", "c"),
		"c": service("c", "a"),
		"d": service("d", "a"),
		"e": service("e"),
	}
	_, err := planner.NewGraph(services)
	var cycle *planner.CycleError
	if !errors.As(err, &cycle) {
		t.Fatalf("NewGraph: got %v, want a *CycleError", err)
	}
	if got, want := strings.Join(cycle.Path, " -> "), "a -> b -> c -> a"; got != want {
		t.Errorf("cycle path %q, want %q", got, want)
	}
	if !strings.Contains(err.Error(), "dependency cycle detected: a -> b -> c -> a") {
		t.Errorf("error %q does not print the path", err)
	}

	_, err = planner.Up(planner.Desired{Project: &types.Project{Name: "x", Services: services}}, planner.Observed{}, planner.Options{})
	if !errors.As(err, &cycle) {
		t.Errorf("Up: got %v, want a *CycleError", err)
	}
}

// service makes a service that requires deps.
func service(name string, deps ...string) types.ServiceConfig {
	svc := types.ServiceConfig{Name: name}
	svc.Image = name
	svc.DependsOn = types.DependsOnConfig{}
	for _, d := range deps {
		svc.DependsOn[d] = types.ServiceDependency{Condition: types.ServiceConditionStarted, Required: true}
	}
	return svc
}

func TestSelfDependencyIsACycle(t *testing.T) {
	_, err := planner.NewGraph(types.Services{"a": service("a", "a")})
	if err == nil || !strings.Contains(err.Error(), "a -> a") {
		t.Fatalf("got %v, want the cycle a -> a", err)
	}
}

func TestRequiredDependencyDisabledByProfile(t *testing.T) {
	// The compose spec's own example: targeting phpmyadmin enables its
	// profile (debug) but not the one of its dependency db (dev).
	p := load(t, profiles)
	_, err := planner.Up(planner.Desired{Project: p}, planner.Observed{}, planner.Options{Services: []string{"admin"}})
	var dis *planner.DisabledDependencyError
	if !errors.As(err, &dis) {
		t.Fatalf("got %v, want a *DisabledDependencyError", err)
	}
	want := `service "admin" depends on "db", which no active profile enables: run with --profile dev (or set depends_on.db.required: false)`
	if err.Error() != want {
		t.Errorf("error:\n%s\nwant:\n%s", err, want)
	}
}

func TestUnknownServiceArgument(t *testing.T) {
	p := load(t, chain)
	_, err := planner.Up(planner.Desired{Project: p}, planner.Observed{}, planner.Options{Services: []string{"nope"}})
	if err == nil || err.Error() != "no such service: nope (the project has: api, db, web)" {
		t.Fatalf("got %v", err)
	}
	_, err = planner.Down(planner.Desired{Project: p}, planner.Observed{}, planner.DownOptions{Services: []string{"nope"}})
	if err == nil || !strings.Contains(err.Error(), "no such service: nope") {
		t.Fatalf("down: got %v", err)
	}
}

func TestConflictingRecreateFlags(t *testing.T) {
	p := load(t, chain)
	_, err := planner.Up(planner.Desired{Project: p}, planner.Observed{}, planner.Options{ForceRecreate: true, NoRecreate: true})
	if err == nil || !strings.Contains(err.Error(), "--force-recreate and --no-recreate") {
		t.Fatalf("got %v", err)
	}
}
