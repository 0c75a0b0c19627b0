package main_test

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

// TestRefusedBeforeBoot: what up cannot run, plan shows as blocked (exit
// 0, in text and JSON), config prints and warns about, and up refuses in
// one line naming the service, the field and the fix, before it pulls or
// boots anything, not even the services that could run.
func TestRefusedBeforeBoot(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	good := "  good:\n    image: " + ref + "\n    command: [sleep, \"1000\"]\n"
	cases := []struct {
		name, compose, service, reason string
		setup                          func(t *testing.T, dir string)
	}{{
		name:    "external secret",
		compose: "  db:\n    image: " + ref + "\n    secrets: [pw]\nsecrets:\n  pw: {external: true}\n",
		service: "db", reason: `secrets: "pw" is external: true, which only a swarm provides (vmcompose has none): give it a file: or environment: instead`,
	}, {
		name:    "missing secret file",
		compose: "  db:\n    image: " + ref + "\n    secrets: [pw]\nsecrets:\n  pw: {file: ./pw.txt}\n",
		service: "db", reason: `secrets: "pw": file ` + filepath.Join(p.home, "missing-secret-file", "pw.txt") + ` does not exist: create it`,
	}, {
		// Sentry: services that build an image of their own and never
		// pull it; up used to fail pulling, naming another service.
		name: "build without Dockerfile",
		compose: "  web:\n    image: snuba-local\n    build: .\n    pull_policy: never\n" +
			"  worker:\n    image: snuba-local\n    build: .\n    pull_policy: never\n",
		service: "web", reason: "build.dockerfile: " + filepath.Join(p.home, "build-without-Dockerfile", "Dockerfile") + " does not exist: create it",
	}, {
		name:    "build ssh",
		compose: "  app:\n    build: {context: ., dockerfile_inline: \"FROM scratch\", ssh: [default]}\n",
		service: "app", reason: "build.ssh: is not supported: the builder forwards no SSH agent or key",
	}, {
		name:    "backend",
		compose: "  vz:\n    image: " + ref + "\n    x-vm: {backend: vz}\n",
		service: "vz", reason: `x-vm.backend: "vz" is not supported on linux yet: set it to qemu or remove it`,
	}, {
		name:    "docker.sock",
		compose: "  ci:\n    image: " + ref + "\n    volumes: [./docker.sock:/var/run/docker.sock]\n",
		service: "ci", reason: "the source is a unix socket, which a VM cannot reach",
		setup: func(t *testing.T, dir string) {
			l, err := net.Listen("unix", filepath.Join(dir, "docker.sock"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { l.Close() })
		},
	}, {
		name:    "healthy without healthcheck",
		compose: "  app:\n    image: " + ref + "\n    depends_on: {good: {condition: service_healthy}}\n",
		service: "app", reason: "depends_on.good.condition: service_healthy, but good has no healthcheck",
	}, {
		name:    "disk volume writers",
		compose: "  w:\n    image: " + ref + "\n    scale: 2\n    volumes: [data:/d]\nvolumes: {data: {driver_opts: {sharing: disk}}}\n",
		service: "w", reason: `volumes: "data" is mounted read-write by its 2 replicas, but it has sharing: disk`,
	}, {
		name:    "image reference",
		compose: "  bad:\n    image: \"UPPER/Case::bad@@sha256:zz\"\n",
		service: "bad", reason: `image: "UPPER/Case::bad@@sha256:zz" is not an image reference`,
	}, {
		name:    "restart",
		compose: "  flaky:\n    image: " + ref + "\n    restart: sometimes\n",
		service: "flaky", reason: `restart: "sometimes" is not a policy`,
	}}
	var dirs []string
	for _, tc := range cases {
		dirs = append(dirs, filepath.Join(p.home, strings.ReplaceAll(strings.ReplaceAll(tc.name, " ", "-"), ".", "-")))
	}
	p.cleanup(dirs...)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := dirs[i]
			os.MkdirAll(dir, 0o755)
			if tc.setup != nil {
				tc.setup(t, dir)
			}
			compose := "services:\n" + good + tc.compose
			plan, stderr, code := p.in(dir, compose, "plan")
			if code != 0 || !strings.Contains(plan, "blocked  "+tc.service+"-1") || !strings.Contains(plan, tc.reason) || !strings.Contains(plan, "create   good-1") {
				t.Errorf("plan: exit %d, %s\n%s", code, stderr, plan)
			}
			js, _, _ := p.in(dir, "", "plan", "--format", "json")
			var parsed struct {
				Operations []struct{ Kind, Service, Reason string }
			}
			if err := json.Unmarshal([]byte(js), &parsed); err != nil {
				t.Fatal(err)
			}
			found := false
			for _, op := range parsed.Operations {
				found = found || op.Kind == "blocked" && op.Service == tc.service && strings.Contains(op.Reason, tc.reason)
			}
			if !found {
				t.Errorf("plan --format json has no blocked %s:\n%s", tc.service, js)
			}

			out, stderr, code := p.in(dir, "", "config")
			if code != 0 || !strings.Contains(out, "  "+tc.service+":\n") ||
				!strings.Contains(stderr, `warning: service "`+tc.service+`" cannot run: `) || !strings.Contains(stderr, tc.reason) {
				t.Errorf("config: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, stderr)
			}

			_, stderr, code = p.in(dir, "", "up", "-d")
			if code == 0 || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, `vmcompose: service "`+tc.service+`": `) || !strings.Contains(stderr, tc.reason) {
				t.Errorf("up -d: exit %d, stderr %q; want one line with %q", code, stderr, tc.reason)
			}
			vms, _ := os.ReadDir(filepath.Join(p.home, "state", "vmcompose", filepath.Base(dir), "vms"))
			if len(vms) != 0 || len(qemus(p.home)) != 0 {
				t.Errorf("up booted %d VMs before refusing", len(vms))
			}
		})
	}
}

// TestPullSaysWhatItSkips: pull skips what docker compose's pull skips
// and says why, instead of exiting 0 with nothing printed: a build:
// service without image: (vmcompose build makes it), pull_policy: never
// or build, and with --ignore-buildable every build: service.
func TestPullSaysWhatItSkips(t *testing.T) {
	dir := t.TempDir()
	compose := "services:\n  web: {image: snuba-local, build: ., pull_policy: never}\n  app: {build: ./app}\n  side: {image: busybox, pull_policy: never}\n" +
		"  gen: {image: gen, build: ., pull_policy: build}\n  api: {image: api, build: .}\n"
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(compose), 0o644); err != nil {
		t.Fatal(err)
	}
	_, stderr, code := run(t, dir, "pull", "app")
	if code != 0 || stderr != "service \"app\": skipped: built by `vmcompose build`, not pulled\n" {
		t.Errorf("pull app: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = run(t, dir, "pull", "--ignore-buildable")
	want := "service \"api\": skipped: --ignore-buildable, and `vmcompose build` can build api\n" +
		"service \"app\": skipped: built by `vmcompose build`, not pulled\n" +
		"service \"gen\": skipped: pull_policy: build\n" +
		"service \"side\": skipped: pull_policy: never\n" +
		"service \"web\": skipped: pull_policy: never\n"
	if code != 0 || stderr != want {
		t.Errorf("pull --ignore-buildable: exit %d, stderr:\n%s\nwant:\n%s", code, stderr, want)
	}
}

// TestPullBuildable: a service with build: and image: is pulled; when the
// pull fails the other images are still pulled and pull says which
// services to build, as docker compose's pull does, and it fails unless
// --ignore-pull-failures (compose returns those errors too).
func TestPullBuildable(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("shop/web", testimage.Busybox(t))
	missing := p.reg + "/shop/api:1"
	dir := t.TempDir()
	compose := "services:\n  web: {image: " + ref + ", build: .}\n  api: {image: " + missing + ", build: .}\n"
	if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), []byte(compose), 0o644); err != nil {
		t.Fatal(err)
	}
	mustBuild := "warning: some service images must be built from source: run `vmcompose build api`\n"
	_, stderr, code := run(t, dir, "--progress", "plain", "pull")
	if code == 0 || !strings.Contains(stderr, ref+": root filesystem built in") || !strings.Contains(stderr, mustBuild) ||
		!strings.Contains(stderr, "\nvmcompose: service api: pulling "+missing+": ") {
		t.Errorf("pull: exit %d, stderr:\n%s", code, stderr)
	}
	_, stderr, code = run(t, dir, "--progress", "quiet", "pull", "--ignore-pull-failures", "api")
	if code != 0 || !strings.HasPrefix(stderr, mustBuild+"warning: service api: pulling "+missing+": ") || strings.Count(stderr, "\n") != 2 {
		t.Errorf("pull --ignore-pull-failures api: exit %d, stderr:\n%s", code, stderr)
	}
}
