package planner_test

import (
	"testing"

	"github.com/vmcompose/vmcompose/planner"
)

// TestPlanBlocksGolden: what up would refuse, plan shows as blocked with
// the reason, whatever the service's dependencies; up reads the same plan.
func TestPlanBlocksGolden(t *testing.T) {
	tests := []struct {
		name     string
		yaml     string
		problems map[string][]string
		observed func(t testing.TB) planner.Observed
		opts     planner.Options
		want     string
		blocked  string // what up says, when the case checks it
	}{{
		name: "secrets and configs run; what only a swarm gives is refused, not dropped",
		yaml: `
services:
  db: {image: mysql, secrets: [db-password, {source: tls, target: /etc/tls.key}], configs: [conf]}
  vault: {image: app, secrets: [{source: db-password, uid: "100", mode: 0400}], depends_on: [db]}
  app: {image: app, configs: [{source: tmpl, target: /etc/app.conf}, conf]}
  ext: {image: app, configs: [ext]}
secrets:
  db-password: {file: ./db/password.txt}
  tls: {environment: TLS_KEY}
configs:
  conf: {content: "x=1"}
  tmpl: {file: ./app.conf.tmpl, template_driver: golang}
  ext: {external: true, name: shared}
`,
		want: `project demo (up): 4 operations in 2 waves: 2 create, 2 blocked
wave 1
  1  blocked  app-1    configs: "tmpl" has template_driver: "golang", which only a swarm runs (vmcompose has none): remove template_driver: and give it the rendered content
  2  create   db-1     new service
  3  blocked  ext-1    configs: "ext" is external: true, which only a swarm provides (vmcompose has none): give it a file:, environment: or content: instead
wave 2
  4  create   vault-1  new service (after 2)
`,
	}, {
		name: "a secret's driver",
		yaml: `
services:
  vault: {image: app, secrets: [swarm]}
secrets:
  swarm: {file: ./x, driver: vault}
`,
		want: `project demo (up): 1 operation in 1 wave: 1 blocked
wave 1
  1  blocked  vault-1  secrets: "swarm" has driver: "vault", which only a swarm runs (vmcompose has none): remove driver: and give it a file: or environment: instead
`,
	}, {
		name: "owners by name and modes that are no file modes",
		yaml: `
services:
  a: {image: app, secrets: [{source: pw, uid: app}]}
  b: {image: app, configs: [{source: conf, mode: 0}]}
  c: {image: app, configs: [{source: conf, gid: "-1"}]}
secrets:
  pw: {environment: PW}
configs:
  conf: {content: "x=1"}
`,
		want: `project demo (up): 3 operations in 1 wave: 3 blocked
wave 1
  1  blocked  a-1  secrets: "pw": uid: "app" is not a number of 0 or more: give the numeric uid (the host cannot look names up in the image)
  2  blocked  b-1  configs: "conf": mode: 0 leaves the file unreadable: give its owner read access at least, e.g. 0400
  3  blocked  c-1  configs: "conf": gid: "-1" is not a number of 0 or more: give the numeric gid (the host cannot look names up in the image)
`,
	}, {
		name: "build: runs, with image: or without, and what it cannot do blocks it and what requires it",
		yaml: `
services:
  web: {image: getsentry/snuba, build: ., pull_policy: never}
  api: {build: .}
  worker: {image: getsentry/snuba, build: {context: ., cache_from: [getsentry/snuba:cache]}}
  nginx: {image: nginx, depends_on: [web, api]}
  jobs: {image: nginx, depends_on: [worker]}
`,
		want: `project demo (up): 5 operations in 2 waves: 3 create, 2 blocked
wave 1
  1  create   api-1     new service
  2  create   web-1     new service
  3  blocked  worker-1  build.cache_from: is not supported: the builder caches layers in its own store only: remove cache_from:
wave 2
  4  blocked  jobs-1    depends on worker, which cannot run (after 3)
  5  create   nginx-1   new service (after 1, 2)
`,
	}, {
		name:     "what only the host can tell comes in Desired.Problems",
		yaml:     `services: {ci: {image: docker, volumes: ["/var/run/docker.sock:/var/run/docker.sock"]}, web: {image: nginx}}`,
		problems: map[string][]string{"ci": {"volumes: bind mount of /var/run/docker.sock at /var/run/docker.sock: the source is a unix socket, which a VM cannot reach"}, "gone": {"ignored"}},
		want: `project demo (up): 2 operations in 1 wave: 1 create, 1 blocked
wave 1
  1  blocked  ci-1   volumes: bind mount of /var/run/docker.sock at /var/run/docker.sock: the source is a unix socket, which a VM cannot reach
  2  create   web-1  new service
`,
	}, {
		name: "service_healthy on a dependency without a healthcheck; required: false only warns",
		yaml: `
services:
  app: {image: app, depends_on: {db: {condition: service_healthy}}}
  side: {image: side, depends_on: {db: {condition: service_healthy, required: false}}}
  off: {image: off, depends_on: {cache: {condition: service_healthy}}}
  ok: {image: ok, depends_on: {checked: {condition: service_healthy}}}
  db: {image: postgres}
  cache: {image: redis, healthcheck: {disable: true}}
  checked: {image: redis, healthcheck: {test: [CMD, redis-cli, ping]}}
`,
		want: `project demo (up): 7 operations in 2 waves: 5 create, 2 blocked
wave 1
  1  create   cache-1    new service
  2  create   checked-1  new service
  3  create   db-1       new service
wave 2
  4  blocked  app-1      depends_on.db.condition: service_healthy, but db has no healthcheck (an image's HEALTHCHECK is not run): add a healthcheck: to db, or use condition: service_started (after 3)
  5  blocked  off-1      depends_on.cache.condition: service_healthy, but cache has no healthcheck (an image's HEALTHCHECK is not run): add a healthcheck: to cache, or use condition: service_started (after 1)
  6  create   ok-1       new service (after 2)
  7  create   side-1     new service (after 3)
warnings
  service "side": depends_on.db.condition: service_healthy, but db has no healthcheck (an image's HEALTHCHECK is not run): add a healthcheck: to db, or use condition: service_started (required: false, so side starts without waiting)
`,
	}, {
		name: "two services writing one disk volume: the second is blocked, and so is a reader",
		yaml: `
services:
  a: {image: a, volumes: [data:/d]}
  b: {image: b, volumes: [data:/d]}
  c: {image: c, volumes: [data:/d:ro]}
volumes: {data: {driver_opts: {sharing: disk}}}
`,
		want: `project demo (up): 3 operations in 1 wave: 1 create, 2 blocked
wave 1
  1  create   a-1  new service
  2  blocked  b-1  volumes: "data" is mounted read-write by services "a" and "b", but it has sharing: disk: a disk image that a VM writes is that VM's alone (ext4 is not a cluster file system): mount it in one of them only, or set sharing: auto (a directory all of them share)
  3  blocked  c-1  volumes: "data" is mounted read-only here while "a" writes it, but it has sharing: disk: a disk image that a VM writes is that VM's alone (ext4 is not a cluster file system): drop this mount, or set sharing: auto (a directory all of them share)
`,
	}, {
		name: "replicas writing one disk volume, through --scale",
		yaml: `services: {a: {image: a, volumes: [data:/d]}, b: {image: b, volumes: [data:/d:ro]}}
volumes: {data: {driver_opts: {sharing: disk}}}`,
		opts:    planner.Options{Scale: map[string]int{"a": 2}},
		blocked: `service "a": volumes: "data" is mounted read-write by its 2 replicas, but it has sharing: disk: a disk image that a VM writes is that VM's alone (ext4 is not a cluster file system): run one replica, or set sharing: auto (a directory all of them share); service "b": volumes: "data" is mounted read-only here while "a" writes it, but it has sharing: disk: a disk image that a VM writes is that VM's alone (ext4 is not a cluster file system): drop this mount, or set sharing: auto (a directory all of them share)`,
		want: `project demo (up): 3 operations in 1 wave: 3 blocked
wave 1
  1  blocked  a-1  volumes: "data" is mounted read-write by its 2 replicas, but it has sharing: disk: a disk image that a VM writes is that VM's alone (ext4 is not a cluster file system): run one replica, or set sharing: auto (a directory all of them share)
  2  blocked  a-2  volumes: "data" is mounted read-write by its 2 replicas, but it has sharing: disk: a disk image that a VM writes is that VM's alone (ext4 is not a cluster file system): run one replica, or set sharing: auto (a directory all of them share)
  3  blocked  b-1  volumes: "data" is mounted read-only here while "a" writes it, but it has sharing: disk: a disk image that a VM writes is that VM's alone (ext4 is not a cluster file system): drop this mount, or set sharing: auto (a directory all of them share)
`,
	}, {
		name: "a writer that runs and is not planned keeps its disk volume",
		yaml: `services: {b: {image: b, volumes: [data:/d]}, a: {image: a, volumes: [data:/d]}}
volumes: {data: {driver_opts: {sharing: disk}}}`,
		observed: func(testing.TB) planner.Observed {
			return planner.Observed{Instances: []planner.Instance{{Service: "b", Number: 1, State: planner.Running, Hash: "x"}}}
		},
		opts: planner.Options{Services: []string{"a"}},
		want: `project demo (up): 1 operation in 1 wave: 1 blocked
wave 1
  1  blocked  a-1  volumes: "data" is mounted read-write by services "b" and "a", but it has sharing: disk: a disk image that a VM writes is that VM's alone (ext4 is not a cluster file system): mount it in one of them only, or set sharing: auto (a directory all of them share)
`,
	}, {
		name: "a writer that does not run and is not planned is no conflict",
		yaml: `services: {b: {image: b, volumes: [data:/d]}, a: {image: a, volumes: [data:/d]}}
volumes: {data: {driver_opts: {sharing: disk}}}`,
		observed: func(testing.TB) planner.Observed {
			return planner.Observed{Instances: []planner.Instance{{Service: "b", Number: 1, State: planner.Stopped, Hash: "x"}}}
		},
		opts: planner.Options{Services: []string{"a"}},
		want: `project demo (up): 1 operation in 1 wave: 1 create
wave 1
  1  create  a-1  new service
`,
	}, {
		name: "an image reference that cannot parse and a restart policy that is none",
		yaml: `
services:
  bad: {image: "UPPER/Case::bad@@sha256:zz"}
  flaky: {image: busybox, restart: sometimes}
  capped: {image: busybox, restart: "always:3"}
  fine: {image: "registry.local:5000/team/app:1.2@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", restart: "on-failure:5"}
`,
		want: `project demo (up): 4 operations in 1 wave: 1 create, 3 blocked
wave 1
  1  blocked  bad-1     image: "UPPER/Case::bad@@sha256:zz" is not an image reference: write [registry/]repository[:tag][@sha256:digest], the repository in lowercase
  2  blocked  capped-1  restart: "always:3" takes no count: use on-failure:N for a bounded policy
  3  create   fine-1    new service
  4  blocked  flaky-1   restart: "sometimes" is not a policy: use no, always, on-failure[:N] or unless-stopped
`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var observed planner.Observed
			if tt.observed != nil {
				observed = tt.observed(t)
			}
			plan, err := planner.Up(planner.Desired{Project: load(t, tt.yaml), Problems: tt.problems}, observed, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := plan.String(); got != tt.want {
				t.Errorf("plan:\n%s\nwant:\n%s", got, tt.want)
			}
			if err := plan.Blocked(); tt.blocked != "" && (err == nil || err.Error() != tt.blocked) {
				t.Errorf("up says %v, want %s", err, tt.blocked)
			}
		})
	}
}
