package planner

import (
	"fmt"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
)

// Graph is the dependency graph of a project's services. compose-go has
// already turned links, volumes_from and network_mode: service:X into
// depends_on entries, so depends_on is the whole graph.
type Graph struct {
	names []string       // sorted service names
	index map[string]int // name -> position in names
	deps  [][]edge       // deps[i]: what names[i] depends on, sorted
	users [][]int        // users[i]: who depends on names[i], sorted
	wave  []int          // 1 + the longest dependency chain below names[i]
}

type edge struct {
	to  int
	dep types.ServiceDependency
}

// NewGraph builds the graph of the given services. A depends_on entry that
// names a service outside the set is an error when it is required and is
// dropped otherwise. A cycle is a *CycleError.
func NewGraph(services types.Services) (*Graph, error) {
	g := &Graph{index: make(map[string]int, len(services))}
	for name := range services {
		g.names = append(g.names, name)
	}
	slices.Sort(g.names)
	for i, name := range g.names {
		g.index[name] = i
	}
	g.deps = make([][]edge, len(g.names))
	g.users = make([][]int, len(g.names))
	for i, name := range g.names {
		svc := services[name]
		for dep, cfg := range svc.DependsOn {
			j, ok := g.index[dep]
			if !ok {
				if cfg.Required {
					return nil, fmt.Errorf("service %q depends on undefined service %q: define it, or set depends_on.%s.required: false", name, dep, dep)
				}
				continue
			}
			g.deps[i] = append(g.deps[i], edge{to: j, dep: cfg})
			g.users[j] = append(g.users[j], i)
		}
		slices.SortFunc(g.deps[i], func(a, b edge) int { return a.to - b.to })
	}
	for i := range g.users {
		slices.Sort(g.users[i])
	}
	if err := g.layer(); err != nil {
		return nil, err
	}
	return g, nil
}

// CycleError is a dependency cycle; Path starts and ends with the same
// service.
type CycleError struct{ Path []string }

func (e *CycleError) Error() string {
	return fmt.Sprintf("dependency cycle detected: %s: remove one of these depends_on, links, volumes_from or network_mode: service: references",
		strings.Join(e.Path, " -> "))
}

// layer computes every service's wave with Kahn's algorithm, in linear time,
// and reports a cycle if some services never become ready.
func (g *Graph) layer() error {
	n := len(g.names)
	g.wave = make([]int, n)
	pending := make([]int, n)
	queue := make([]int, 0, n)
	for i := range n {
		pending[i] = len(g.deps[i])
		if pending[i] == 0 {
			queue = append(queue, i)
			g.wave[i] = 1
		}
	}
	for head := 0; head < len(queue); head++ {
		i := queue[head]
		for _, u := range g.users[i] {
			g.wave[u] = max(g.wave[u], g.wave[i]+1)
			if pending[u]--; pending[u] == 0 {
				queue = append(queue, u)
			}
		}
	}
	if len(queue) == n {
		return nil
	}
	return &CycleError{Path: g.cycleFrom(pending)}
}

// cycleFrom follows unresolved dependencies from the first stuck service
// until a service repeats. Every stuck service has a stuck dependency, so
// the walk must close a cycle.
func (g *Graph) cycleFrom(pending []int) []string {
	start := slices.IndexFunc(pending, func(p int) bool { return p > 0 })
	seen := map[int]int{}
	var path []int
	for i := start; ; {
		if at, ok := seen[i]; ok {
			names := make([]string, 0, len(path)-at+1)
			for _, j := range path[at:] {
				names = append(names, g.names[j])
			}
			return append(names, g.names[i])
		}
		seen[i] = len(path)
		path = append(path, i)
		for _, e := range g.deps[i] {
			if pending[e.to] > 0 {
				i = e.to
				break
			}
		}
	}
}

// Names returns the services in name order.
func (g *Graph) Names() []string { return g.names }

// Wave returns the 1-based start wave of a service: every dependency of a
// service is in an earlier wave, so the services of one wave can start in
// parallel.
func (g *Graph) Wave(name string) int { return g.wave[g.index[name]] }

// Dependencies returns the services name depends on, in name order.
func (g *Graph) Dependencies(name string) []string {
	es := g.deps[g.index[name]]
	out := make([]string, len(es))
	for k, e := range es {
		out[k] = g.names[e.to]
	}
	return out
}

// Dependents returns the services that depend on name, in name order.
func (g *Graph) Dependents(name string) []string {
	us := g.users[g.index[name]]
	out := make([]string, len(us))
	for k, u := range us {
		out[k] = g.names[u]
	}
	return out
}
