package planner_test

import (
	"context"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/planner"
)

// load parses a compose document with compose-go, as project.Load does,
// without touching the file system.
func load(t testing.TB, yaml string, profiles ...string) *types.Project {
	t.Helper()
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  "/demo",
		ConfigFiles: []types.ConfigFile{{Filename: "compose.yaml", Content: []byte(yaml)}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SetProjectName("demo", true)
		o.Profiles = profiles
		o.SkipResolveEnvironment = true
		o.SkipConsistencyCheck = true // compose-go's cycle check is cubic in chains
	})
	if err != nil {
		t.Fatalf("loading: %v", err)
	}
	return p
}

// running records every enabled service of a project as running with its
// current config, as a converged project would be.
func running(t testing.TB, p *types.Project) planner.Observed {
	t.Helper()
	var o planner.Observed
	for _, name := range p.ServiceNames() {
		svc := p.Services[name]
		f, err := planner.ServiceFields(svc, "")
		if err != nil {
			t.Fatal(err)
		}
		n := 1
		if svc.Deploy != nil && svc.Deploy.Replicas != nil {
			n = *svc.Deploy.Replicas
		}
		for i := 1; i <= n; i++ {
			o.Instances = append(o.Instances, planner.Instance{Service: name, Number: i, State: planner.Running, Hash: f.Hash(), Fields: f})
		}
	}
	return o
}

const chain = `
services:
  web: {image: nginx, depends_on: [api]}
  api: {image: api, depends_on: [db]}
  db: {image: postgres}
`

const fanIn = `
services:
  app:
    image: app
    depends_on:
      db: {condition: service_healthy}
      cache: {condition: service_started}
      migrate: {condition: service_completed_successfully}
  db: {image: postgres, healthcheck: {test: [CMD, pg_isready]}}
  cache: {image: redis}
  migrate: {image: app, command: migrate, depends_on: [db]}
`

const fanOut = `
services:
  db: {image: postgres}
  a: {image: a, depends_on: [db]}
  b: {image: b, depends_on: [db]}
  c: {image: c, links: [db]}
  d: {image: d, volumes_from: [db]}
  e: {image: e, network_mode: "service:db"}
`

const profiles = `
services:
  web: {image: nginx}
  db: {image: postgres, profiles: [dev]}
  admin: {image: phpmyadmin, profiles: [debug], depends_on: [db]}
  tools: {image: busybox, profiles: [debug], depends_on: {db: {condition: service_started, required: false}}}
`

const replicas = `
services:
  lb: {image: nginx, depends_on: [worker]}
  worker: {image: worker, deploy: {replicas: 3}}
`

func TestPlanGolden(t *testing.T) {
	tests := []struct {
		name     string
		yaml     string
		profiles []string
		observed func(t testing.TB) planner.Observed
		opts     planner.Options
		down     bool
		want     string
	}{{
		name: "chain from scratch",
		yaml: chain,
		want: `project demo (up): 3 operations in 3 waves: 3 create
wave 1
  1  create  db-1   new service
wave 2
  2  create  api-1  new service (after 1)
wave 3
  3  create  web-1  new service (after 2)
`,
	}, {
		name:     "chain converged",
		yaml:     chain,
		observed: func(t testing.TB) planner.Observed { return running(t, load(t, chain)) },
		want: `project demo (up): nothing to do, 3 up to date
wave 1
  1  nothing  db-1   up to date
wave 2
  2  nothing  api-1  up to date (after 1)
wave 3
  3  nothing  web-1  up to date (after 2)
`,
	}, {
		name: "fan-in waits for every dependency",
		yaml: fanIn,
		want: `project demo (up): 4 operations in 3 waves: 4 create
wave 1
  1  create  cache-1    new service
  2  create  db-1       new service
wave 2
  3  create  migrate-1  new service (after 2)
wave 3
  4  create  app-1      new service (after 1, 2, 3)
`,
	}, {
		name: "fan-out through depends_on, links, volumes_from and network_mode",
		yaml: fanOut,
		want: `project demo (up): 6 operations in 2 waves: 6 create
wave 1
  1  create  db-1  new service
wave 2
  2  create  a-1   new service (after 1)
  3  create  b-1   new service (after 1)
  4  create  c-1   new service (after 1)
  5  create  d-1   new service (after 1)
  6  create  e-1   new service (after 1)
`,
	}, {
		name: "fan-out down removes dependents first",
		yaml: fanOut,
		down: true,
		observed: func(t testing.TB) planner.Observed {
			o := running(t, load(t, fanOut))
			o.Instances[0].State = planner.Stopped // a-1
			return o
		},
		want: `project demo (down): 6 operations in 2 waves: 6 remove
wave 1
  1  remove  a-1   stopped
  2  remove  b-1   running: stop, then remove
  3  remove  c-1   running: stop, then remove
  4  remove  d-1   running: stop, then remove
  5  remove  e-1   running: stop, then remove
wave 2
  6  remove  db-1  running: stop, then remove (after 1, 2, 3, 4, 5)
`,
	}, {
		name: "profiles: default",
		yaml: profiles,
		want: `project demo (up): 1 operation in 1 wave: 1 create
wave 1
  1  create  web-1  new service
`,
	}, {
		name:     "profiles: dev and debug",
		yaml:     profiles,
		profiles: []string{"dev", "debug"},
		want: `project demo (up): 4 operations in 2 waves: 4 create
wave 1
  1  create  db-1     new service
  2  create  web-1    new service
wave 2
  3  create  admin-1  new service (after 1)
  4  create  tools-1  new service (after 1)
`,
	}, {
		name:     "profiles: a named service enables its profile, optional dependency dropped",
		yaml:     profiles,
		profiles: []string{"dev"},
		opts:     planner.Options{Services: []string{"tools"}},
		want: `project demo (up): 2 operations in 2 waves: 2 create
wave 1
  1  create  db-1     new service
wave 2
  2  create  tools-1  new service (after 1)
`,
	}, {
		name: "replicas and scale-down",
		yaml: replicas,
		observed: func(t testing.TB) planner.Observed {
			p := load(t, strings.Replace(replicas, "replicas: 3", "replicas: 4", 1))
			return running(t, p)
		},
		want: `project demo (up): 5 operations in 2 waves: 1 remove, 4 unchanged
wave 1
  1  nothing  worker-1  up to date
  2  nothing  worker-2  up to date
  3  nothing  worker-3  up to date
  4  remove   worker-4  scale-down to 3
wave 2
  5  nothing  lb-1      up to date (after 1, 2, 3, 4)
`,
	}, {
		name: "--scale adds replicas",
		yaml: replicas,
		opts: planner.Options{Scale: map[string]int{"worker": 2, "lb": 2}},
		want: `project demo (up): 4 operations in 2 waves: 4 create
wave 1
  1  create  worker-1  new service
  2  create  worker-2  new replica (scale 2)
wave 2
  3  create  lb-1      new service (after 1, 2)
  4  create  lb-2      new replica (scale 2) (after 1, 2)
`,
	}, {
		name: "orphans are reported, not removed",
		yaml: chain,
		observed: func(t testing.TB) planner.Observed {
			o := running(t, load(t, chain))
			o.Instances = append(o.Instances, planner.Instance{Service: "old", Number: 1, State: planner.Running, Hash: "x"})
			return o
		},
		want: `project demo (up): nothing to do, 3 up to date
wave 1
  1  nothing  db-1   up to date
wave 2
  2  nothing  api-1  up to date (after 1)
wave 3
  3  nothing  web-1  up to date (after 2)
warnings
  orphan VM old-1: service "old" is no longer in the compose file; run with --remove-orphans to remove it
`,
	}, {
		name: "orphans removed with --remove-orphans",
		yaml: chain,
		opts: planner.Options{RemoveOrphans: true, Services: []string{"db"}},
		observed: func(t testing.TB) planner.Observed {
			o := running(t, load(t, chain))
			o.Instances = append(o.Instances, planner.Instance{Service: "old", Number: 1, State: planner.Stopped, Hash: "x"})
			return o
		},
		want: `project demo (up): 2 operations in 1 wave: 1 remove, 1 unchanged
wave 1
  1  nothing  db-1   up to date
  2  remove   old-1  orphan: the service is no longer in the compose file
`,
	}, {
		name: "one changed field recreates one service; restart: true restarts its dependent",
		yaml: `
services:
  web: {image: nginx, depends_on: {api: {condition: service_started, restart: true}}}
  api: {image: api, environment: {LEVEL: debug}, depends_on: [db]}
  db: {image: postgres}
`,
		observed: func(t testing.TB) planner.Observed {
			return running(t, load(t, `
services:
  web: {image: nginx, depends_on: {api: {condition: service_started, restart: true}}}
  api: {image: api, environment: {LEVEL: info}, labels: {team: x}, depends_on: [db]}
  db: {image: postgres}
`))
		},
		want: `project demo (up): 3 operations in 3 waves: 1 recreate, 1 restart, 1 unchanged
wave 1
  1  nothing   db-1   up to date
wave 2
  2  recreate  api-1  changed: environment (after 1)
wave 3
  3  restart   web-1  dependency api is replaced (depends_on.api.restart: true) (after 2)
`,
	}, {
		name:     "--force-recreate of a named service leaves its dependencies alone",
		yaml:     chain,
		observed: func(t testing.TB) planner.Observed { return running(t, load(t, chain)) },
		opts:     planner.Options{Services: []string{"web"}, ForceRecreate: true},
		want: `project demo (up): 3 operations in 3 waves: 1 recreate, 2 unchanged
wave 1
  1  nothing   db-1   up to date
wave 2
  2  nothing   api-1  up to date (after 1)
wave 3
  3  recreate  web-1  --force-recreate (after 2)
`,
	}, {
		name:     "--always-recreate-deps recreates them too",
		yaml:     chain,
		observed: func(t testing.TB) planner.Observed { return running(t, load(t, chain)) },
		opts:     planner.Options{Services: []string{"web"}, ForceRecreate: true, AlwaysRecreateDeps: true},
		want: `project demo (up): 3 operations in 3 waves: 3 recreate
wave 1
  1  recreate  db-1   --force-recreate
wave 2
  2  recreate  api-1  --force-recreate (after 1)
wave 3
  3  recreate  web-1  --force-recreate (after 2)
`,
	}, {
		name: "stopped VMs start; --no-deps leaves dependencies alone",
		yaml: chain,
		opts: planner.Options{Services: []string{"api"}, NoDeps: true},
		observed: func(t testing.TB) planner.Observed {
			o := running(t, load(t, chain))
			for i := range o.Instances {
				o.Instances[i].State = planner.Stopped
			}
			return o
		},
		want: `project demo (up): 1 operation in 1 wave: 1 start
wave 1
  1  start  api-1  stopped
`,
	}, {
		name: "a build the builder refuses is blocked, and so is what requires it; an optional dependant still runs",
		yaml: `
services:
  app: {build: {context: ., ssh: [default]}, depends_on: [db]}
  web: {image: nginx, depends_on: [app]}
  side: {image: side, depends_on: {app: {condition: service_started, required: false}}}
  db: {image: postgres}
`,
		want: `project demo (up): 4 operations in 3 waves: 2 create, 2 blocked
wave 1
  1  create   db-1    new service
wave 2
  2  blocked  app-1   build.ssh: is not supported: the builder forwards no SSH agent or key: remove ssh: and fetch private sources into the context first (after 1)
wave 3
  3  create   side-1  new service (after 2)
  4  blocked  web-1   depends on app, which cannot run (after 2)
`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := load(t, tt.yaml, tt.profiles...)
			var observed planner.Observed
			if tt.observed != nil {
				observed = tt.observed(t)
			}
			var plan *planner.Plan
			var err error
			if tt.down {
				plan, err = planner.Down(planner.Desired{Project: p}, observed, planner.DownOptions{})
			} else {
				plan, err = planner.Up(planner.Desired{Project: p}, observed, tt.opts)
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := plan.String(); got != tt.want {
				t.Errorf("plan:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}
