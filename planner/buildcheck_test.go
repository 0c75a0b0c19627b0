package planner_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/vmcompose/vmcompose/planner"
)

// TestBuildProblems: what the builder will not do is refused, one line per
// field naming it and the fix; what it does passes.
func TestBuildProblems(t *testing.T) {
	host := planner.HostPlatform
	other := "linux/s390x"
	if host == other {
		other = "linux/amd64"
	}
	tests := []struct {
		name, app string // the service app's fields, as a flow mapping's content
		secrets   string // the top-level secrets, when any
		want      []string
	}{
		{name: "a local context, the fields the builder honours", app: `build: {context: ., dockerfile: Containerfile, args: {A: "1"}, labels: {l: v}, tags: ["registry.local/app:1"], target: prod, pull: true, no_cache: true, extra_hosts: ["db=10.0.0.2"], network: host, additional_contexts: {src: ../src}}`},
		{name: "dockerfile_inline", app: `build: {context: ., dockerfile_inline: "FROM scratch"}`},
		{name: "network none and default", app: `build: {context: ., network: none}`},
		{name: "the host's platform", app: `platform: ` + host + `, build: {context: ., platforms: [` + host + `]}`},
		{name: "pull_policy build with build:", app: `pull_policy: build, build: .`},
		{name: "an https git URL", app: `build: https://github.com/docker/app.git#main`, want: []string{`build.context: "https://github.com/docker/app.git#main": git URLs are not supported: clone it and give the directory`}},
		{name: "a git@ URL", app: `build: {context: "git@github.com:docker/app.git"}`, want: []string{`build.context: "git@github.com:docker/app.git": git URLs are not supported: clone it and give the directory`}},
		{name: "a repository with a ref", app: `build: ./app.git#v1`, want: []string{`build.context: "/demo/app.git#v1": git URLs are not supported: clone it and give the directory`}},
		{name: "another platform", app: `build: {context: ., platforms: [` + host + `, ` + other + `]}`, want: []string{`build.platforms: "` + other + `" is not supported: the builder runs the host's architecture only: use ` + host + ` or remove platforms:`}},
		{name: "a service platform of another architecture", app: `platform: ` + other + `, build: .`, want: []string{`platform: "` + other + `" with build: is not supported: the builder runs the host's architecture only: use ` + host + ` or remove platform:`}},
		{name: "ssh", app: `build: {context: ., ssh: [default]}`, want: []string{"build.ssh: is not supported: the builder forwards no SSH agent or key: remove ssh: and fetch private sources into the context first"}},
		{name: "cache_from", app: `build: {context: ., cache_from: [app:cache]}`, want: []string{"build.cache_from: is not supported: the builder caches layers in its own store only: remove cache_from:"}},
		{name: "cache_to", app: `build: {context: ., cache_to: ["type=local,dest=/tmp/c"]}`, want: []string{"build.cache_to: is not supported: the builder caches layers in its own store only: remove cache_to:"}},
		{name: "isolation", app: `build: {context: ., isolation: hyperv}`, want: []string{`build.isolation: "hyperv" is not supported: the builder isolates RUN steps with chroot only: remove isolation:`}},
		{name: "privileged", app: `build: {context: ., privileged: true}`, want: []string{"build.privileged: true is not supported: RUN steps get no extra privileges: remove privileged:"}},
		{name: "entitlements", app: `build: {context: ., entitlements: [network.host]}`, want: []string{`build.entitlements: ["network.host"] is not supported: the builder grants none: remove entitlements:`}},
		{name: "shm_size", app: `build: {context: ., shm_size: 2g}`, want: []string{"build.shm_size: is not supported: RUN steps get the builder's /dev/shm: remove shm_size:"}},
		{name: "ulimits", app: `build: {context: ., ulimits: {nofile: 1024}}`, want: []string{"build.ulimits: is not supported: RUN steps get the builder's limits: remove ulimits:"}},
		{name: "a compose network", app: `build: {context: ., network: backend}`, want: []string{`build.network: "backend" is not supported: the builder has no compose networks: use default, host or none`}},
		{name: "extra_hosts without a network", app: `build: {context: ., network: none, extra_hosts: ["db:10.0.0.2"]}`, want: []string{`build.extra_hosts: has no effect with network: none (RUN has no network to reach them on): remove one of them`}},
		{name: "additional contexts that are no local directories", app: `build: {context: ., additional_contexts: {base: "docker-image://alpine:3", web: "service:web", repo: "https://github.com/docker/app.git", src: ./src}}`, want: []string{
			`build.additional_contexts.base: "docker-image://alpine:3" is not supported: only local directories are: give a directory`,
			`build.additional_contexts.repo: "https://github.com/docker/app.git" is not supported: only local directories are: give a directory`,
			`build.additional_contexts.web: "service:web" is not supported: only local directories are: give a directory`,
		}},
		{name: "build secrets from a file or the environment", app: `build: {context: ., secrets: [npmrc, token]}`, secrets: `{npmrc: {file: ./npmrc}, token: {environment: TOKEN}}`},
		{name: "an external build secret", app: `build: {context: ., secrets: [npmrc]}`, secrets: `{npmrc: {external: true}}`, want: []string{`build.secrets: "npmrc" is external: true, which only a swarm provides (vmcompose has none): give it a file: or environment: instead`}},
		{name: "pull_policy build without build:", app: `image: app, pull_policy: build`, want: []string{"pull_policy: build needs build:: add a build: section, or use another pull_policy"}},
		{name: "tags that are no references", app: `build: {context: ., tags: ["app:1", "Bad::tag"]}`, want: []string{`build.tags: "Bad::tag" is not an image reference: write [registry/]repository[:tag], the repository in lowercase`}},
		{name: "image: that is no reference, with build:", app: `image: "Bad::ref", build: .`, want: []string{`image: "Bad::ref" is not an image reference: write [registry/]repository[:tag][@sha256:digest], the repository in lowercase`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			yaml := "services: {app: {" + tt.app + "}, web: {image: web, build: .}}"
			if tt.secrets != "" {
				yaml += "\nsecrets: " + tt.secrets
			}
			p := load(t, yaml)
			got := planner.ServiceProblems(p, p.Services["app"])
			if !slices.Equal(got, tt.want) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestImageName: a build: service without image: gets docker compose's
// name for what it builds, <project>-<service>; one with image: keeps it.
func TestImageName(t *testing.T) {
	p := load(t, "services: {api: {build: .}, web: {image: registry.local/web:2, build: .}}")
	for svc, want := range map[string]string{"api": "demo-api", "web": "registry.local/web:2"} {
		if got := planner.ImageName(p.Name, p.Services[svc]); got != want {
			t.Errorf("ImageName(%s) = %q, want %q", svc, got, want)
		}
	}
}
