package main_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/build"
	"github.com/vmcompose/vmcompose/internal/testenv"
	"github.com/vmcompose/vmcompose/internal/testimage"
	"github.com/vmcompose/vmcompose/oci"
)

var builderArchive struct {
	once sync.Once
	path string
	err  error
}

// newBuildProject is newRunProject whose store gets the builder image
// from the default store (make setup makes it there), written once per
// test binary as an archive that each test's store imports.
func newBuildProject(t testing.TB) *runProject {
	p := newRunProject(t)
	a := &builderArchive
	a.once.Do(func() {
		dir, err := oci.DefaultDir()
		if err != nil {
			a.err = err
			return
		}
		store, err := oci.Open(dir)
		if err != nil {
			a.err = err
			return
		}
		if _, err := store.Image(build.ImageRef()); err != nil {
			a.err = err
			return
		}
		tmp, err := os.MkdirTemp("", "vmcompose-builder-")
		if err != nil {
			a.err = err
			return
		}
		a.path = filepath.Join(tmp, "builder.tar")
		a.err = build.ExportImage(context.Background(), store, a.path)
	})
	if a.err != nil {
		testenv.Missing(t, "no builder image in the default store: %v (make setup makes it)", a.err)
	}
	p.env = append(p.env, "VMCOMPOSE_BUILDER_IMAGE="+a.path)
	return p
}

// The Dockerfile of TestBuild: most of the Dockerfile reference a small
// app uses, multi-stage, with a stage the target leaves out that would
// fail. /run/secrets is empty in the image (ls prints nothing): the
// secret was mounted for its RUN alone.
const featuresDockerfile = `ARG BASE
FROM ${BASE} AS base
ARG GREETING=hello
ENV GREETING=${GREETING} APP_HOME=/app
RUN mkdir -p /app/data && echo "$GREETING from RUN" > /app/data/greeting

FROM base AS build
WORKDIR /build
COPY src/ ./src/
RUN cat src/*.txt | tr a-z A-Z > artifact.txt && echo ran the build stage

FROM base AS final
WORKDIR /app
COPY --chown=1000:1000 src/ /app/src/
COPY --from=build /build/artifact.txt /app/artifact.txt
RUN --mount=type=secret,id=token echo secret=$(wc -c < /run/secrets/token) > /app/secret-len
USER 1000:1000
EXPOSE 8080
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo user=$(id -u):$(id -g) dir=$(pwd) greeting=$GREETING; ls -n /app/src; ls /app/src/sub; cat /app/data/greeting /app/artifact.txt /app/secret-len; ls /run/secrets; exec sleep 3600"]

FROM final AS debug
RUN echo this stage is not the target && false
`

// TestBuild builds three services in a builder VM, from a base in the
// in-process registry: one from a multi-stage Dockerfile with a target, a
// build secret and a .dockerignore; one from dockerfile_inline; one with
// network: none and an additional context. The services run their images
// with the user, working dir, environment and command the Dockerfile
// gave. A second build changes nothing; plan says an image is older than
// an edit of its context, and a build after it re-runs the steps from its
// COPY on and takes the ones before from the cache; a failing RUN is a
// one-line error naming the service and Dockerfile line and leaves the
// image and the running service as they were.
func TestBuild(t *testing.T) {
	p := newBuildProject(t)
	base := p.push("base", testimage.Busybox(t))
	dir := filepath.Join(p.home, "shop")
	p.cleanup(dir)
	write := writer(t, dir)
	write("compose.yaml", `services:
  app:
    build:
      context: ./app
      target: final
      args: {BASE: `+base+`, GREETING: hi}
      secrets: [token]
  inline:
    build:
      context: ./inline
      dockerfile_inline: |
        FROM `+base+`
        RUN echo made inline > /inline.txt
        CMD ["sh", "-c", "cat /inline.txt; exec sleep 3600"]
  offline:
    build:
      context: ./offline
      network: none
      args: {BASE: `+base+`}
      additional_contexts: {extra: ./extra}
secrets:
  token: {file: ./token.txt}
`)
	write("token.txt", "s3cret-value")
	write("offline/Dockerfile", "ARG BASE\nFROM ${BASE}\nCOPY --from=extra hello.txt /hello.txt\n"+
		"RUN tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' , > /nets\n"+
		`CMD ["sh", "-c", "cat /hello.txt; echo nets=$(cat /nets); exec sleep 3600"]`+"\n")
	write("extra/hello.txt", "from the additional context\n")
	write("app/Dockerfile", featuresDockerfile)
	write("app/.dockerignore", "src/ignored.txt\n**/*.log\n")
	write("app/src/a.txt", "alpha\n")
	write("app/src/b.txt", "beta\n")
	write("app/src/ignored.txt", "ignored\n")
	write("app/src/sub/keep", "kept\n")
	write("app/src/sub/x.log", "log\n")
	write("inline/README", "an empty context\n")

	_, stderr, code := p.inWith(dir, "", "plain", "up", "-d", "--wait")
	if code != 0 {
		t.Fatalf("up (which builds the missing images): exit %d\n%s", code, stderr)
	}
	for _, want := range []string{"app | [3/3] STEP 9/9: CMD", "inline | STEP 3/3: CMD", "built docker.io/library/shop-app:latest", "built docker.io/library/shop-inline:latest"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("up's output lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "this stage is not the target") {
		t.Errorf("the stage after the target was built:\n%s", stderr)
	}
	var logs string
	within(30*time.Second, func() bool { logs = p.logsOf(dir, "app"); return strings.Contains(logs, "secret=") })
	for _, want := range []string{"user=1000:1000 dir=/app greeting=hi", "1000     1000", "a.txt", "hi from RUN", "ALPHA\nBETA", "keep", "secret=12\n"} {
		if !strings.Contains(logs, want) {
			t.Errorf("app's output lacks %q:\n%s", want, logs)
		}
	}
	for _, absent := range []string{"ignored.txt", "x.log", "token"} {
		if strings.Contains(logs, absent) {
			t.Errorf("the .dockerignored %s is in the image:\n%s", absent, logs)
		}
	}
	if !within(30*time.Second, func() bool { logs = p.logsOf(dir, "inline"); return strings.Contains(logs, "made inline") }) {
		t.Errorf("inline's output: %q", logs)
	}
	// network: none: RUN saw the loopback interface alone.
	if !within(30*time.Second, func() bool { logs = p.logsOf(dir, "offline"); return strings.Contains(logs, "nets=") }) ||
		!strings.Contains(logs, "from the additional context\n") || !strings.Contains(logs, "nets=lo,\n") {
		t.Errorf("offline's output: %q, want the additional context's file and nets=lo,", logs)
	}

	_, stderr, code = p.inWith(dir, "", "plain", "build")
	if code != 0 || strings.Contains(stderr, "STEP") || strings.Count(stderr, "is up to date") != 3 {
		t.Errorf("a second build with no change: exit %d, want both images up to date and no step run:\n%s", code, stderr)
	}

	write("app/src/b.txt", "beta, edited\n")
	// A plain up would not rebuild it (compose's rule); plan says so.
	if out, stderr, code := p.in(dir, "", "plan"); code != 0 || !strings.Contains(out, `service "app": image shop-app is older than its build context (src/b.txt changed at`) {
		t.Errorf("plan after an edit of the context: exit %d\n%s%s", code, out, stderr)
	}
	_, stderr, code = p.inWith(dir, "", "plain", "build", "app")
	if code != 0 {
		t.Fatalf("build after an edit: exit %d\n%s", code, stderr)
	}
	steps := buildSteps(stderr)
	for _, s := range []string{"ARG GREETING=hello", "ENV GREETING", "RUN mkdir -p /app/data"} {
		if c, ok := steps[s]; !ok || !c {
			t.Errorf("step %q before the changed COPY: cached %v (seen: %v), want from the cache\n%s", s, c, ok, stderr)
		}
	}
	for _, s := range []string{"COPY src/ ./src/", "RUN cat src/*.txt", "COPY --chown=1000:1000 src/ /app/src/"} {
		if c, ok := steps[s]; !ok || c {
			t.Errorf("step %q from the changed COPY on: cached %v (seen: %v), want run again\n%s", s, c, ok, stderr)
		}
	}

	before := p.imageDigest(dir, "shop-app")
	write("app/Dockerfile", strings.Replace(featuresDockerfile, "USER 1000:1000\n", "USER 1000:1000\nRUN echo about to fail; exit 3\n", 1))
	_, stderr, code = p.in(dir, "", "build", "app")
	want := `vmcompose: service "app": build: Dockerfile line 18: RUN echo about to fail; exit 3: exit code 3`
	if code == 0 || strings.TrimSpace(stderr) != want {
		t.Errorf("a failing RUN: exit %d, want the one line %q, got:\n%s", code, want, stderr)
	}
	if after := p.imageDigest(dir, "shop-app"); after != before {
		t.Errorf("a failed build changed the image: %s, then %s", before, after)
	}
	if ps := p.ps(dir); ps["app"].State != "running" {
		t.Errorf("a failed build touched the running service: %+v", ps["app"])
	}
}

// stepLine is a buildah step: "STEP 3/7: RUN ...", "[2/3] STEP 1/4: ...".
var stepLine = regexp.MustCompile(`^(?:\[\d+/\d+\] )?STEP \d+/\d+: (.*)$`)

// buildSteps maps the steps of a plain build output (for one service),
// and every prefix of them, to whether buildah took them from its cache
// ("--> Using cache" follows).
func buildSteps(out string) map[string]bool {
	steps := map[string]bool{}
	var cur string
	for _, line := range strings.Split(out, "\n") {
		_, line, _ = strings.Cut(line, " | ")
		if m := stepLine.FindStringSubmatch(line); m != nil {
			cur = m[1]
			steps[cur] = false
			continue
		}
		if cur != "" && strings.HasPrefix(line, "--> Using cache") {
			steps[cur] = true
		}
	}
	return prefixMap(steps)
}

// prefixMap lets a step be looked up by a prefix of its text.
func prefixMap(m map[string]bool) map[string]bool {
	out := map[string]bool{}
	for s, c := range m {
		for i := 1; i <= len(s); i++ {
			out[s[:i]] = c
		}
	}
	return out
}

// imageDigest is the digest the store's image list gives ref.
func (p *runProject) imageDigest(dir, ref string) string {
	p.t.Helper()
	out, stderr, code := p.in(dir, "", "image", "ls")
	if code != 0 {
		p.t.Fatalf("image ls: exit %d: %s", code, stderr)
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.Contains(f[0], "/"+ref+":") {
			return f[1]
		}
	}
	return ""
}

// TestWatchRebuild: watch builds a build: service's missing image before
// it brings the service up; an edit under a rebuild rule's path builds
// the image again and recreates the service with it, and the files of the
// service's sync rule are in the new VM as they are on the host, not as
// the image has them.
func TestWatchRebuild(t *testing.T) {
	p := newBuildProject(t)
	base := p.push("base", testimage.Busybox(t))
	dir := filepath.Join(p.home, "web")
	p.cleanup(dir)
	write := writer(t, dir)
	write("compose.yaml", `services:
  web:
    build:
      context: .
      args: {BASE: `+base+`}
    stop_grace_period: 1s
    develop:
      watch:
        - {path: ./src, action: rebuild}
        - {path: ./static, action: sync, target: /static}
`)
	write("Dockerfile", "ARG BASE\nFROM ${BASE}\nCOPY src/ /src/\nCOPY static/ /static/\nCMD [\"sh\", \"-c\", \"cat /src/msg; exec sleep 3600\"]\n")
	write("src/msg", "version one\n")
	write("static/s.txt", "from the image\n")
	// The watch's own up holds the new VM until it synced the files.
	c, _, werr := p.background(dir, "web-1: created: 2 files synced", "watch")
	defer func() {
		c.Process.Kill()
		c.Wait()
	}()
	if !within(30*time.Second, func() bool { return strings.Contains(p.logsOf(dir, "web"), "version one") }) {
		t.Fatalf("the service's first output: %q\nwatch's stderr:\n%s", p.logsOf(dir, "web"), werr)
	}
	write("static/s.txt", "synced\n")
	if !within(30*time.Second, func() bool { return p.execIn(dir, "web", "cat /static/s.txt") == "synced\n" }) {
		t.Fatalf("the sync rule's edit is not in the VM\nwatch's stderr:\n%s", werr)
	}
	write("src/msg", "version two\n")
	if !within(120*time.Second, func() bool { return strings.Contains(p.logsOf(dir, "web"), "version two") }) {
		t.Fatalf("no VM with the rebuilt image after 120s: logs %q\nwatch's stderr:\n%s", p.logsOf(dir, "web"), werr)
	}
	if got := p.execIn(dir, "web", "cat /static/s.txt"); got != "synced\n" {
		t.Errorf("after the rebuild the VM has /static/s.txt %q, want the host's %q (resynced)", got, "synced\n")
	}
}

// TestConfigImagesNamesBuilt: config --images gives a build: service
// without image: the name compose gives it, <project>-<service>.
func TestConfigImagesNamesBuilt(t *testing.T) {
	dir := t.TempDir()
	write := writer(t, dir)
	write("compose.yaml", "name: shop\nservices:\n  app: {build: .}\n  db: {image: postgres:16}\n  web: {build: ., image: example.com/web:1}\n")
	write("Dockerfile", "FROM scratch\n")
	out, stderr, code := run(t, dir, "config", "--images")
	if want := "example.com/web:1\npostgres:16\nshop-app\n"; code != 0 || out != want {
		t.Errorf("config --images: exit %d, %q, want %q\n%s", code, out, want, stderr)
	}
}
