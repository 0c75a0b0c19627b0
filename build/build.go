package build

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/google/go-containerregistry/pkg/name"

	"github.com/vmcompose/vmcompose/oci"
)

// Spec is one service's build.
type Spec struct {
	Service types.ServiceConfig // with Build set; Image is the tag to give the result
	NoCache bool                // --no-cache, or build.no_cache
	Pull    bool                // --pull, or build.pull: pull the bases again
	Args    map[string]string   // --build-arg, over build.args
	Quiet   bool                // no output lines (errors still name the step)
	// Out gets each line of the builder's output.
	Out func(line string)
}

// Result is an image a build made, now in the store.
type Result struct {
	Service  string
	Image    oci.Image
	Cached   bool // the image of the last build, its inputs unchanged
	Duration time.Duration
}

// StepError is a build that failed in the builder: at a Dockerfile line
// when buildah's output names the step.
type StepError struct {
	Dockerfile  string // its name, or "dockerfile_inline"
	Line        int    // 0: unknown
	Instruction string
	Code        int // the step's exit code, else buildah's
	Message     string
}

func (e *StepError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s (exit code %d)", e.Dockerfile, e.Message, e.Code)
	}
	return fmt.Sprintf("%s line %d: %s: exit code %d", e.Dockerfile, e.Line, e.Instruction, e.Code)
}

// Build builds the specs in turn in the project's builder VM (booted when
// it does not run, and left running for the next build) and imports each
// image into the store under its service's image: name and build.tags.
// A spec whose inputs are those of its last build gives that image
// without a builder. A failed build leaves the store as it was.
func (b *Builder) Build(ctx context.Context, specs []Spec) ([]Result, error) {
	unlock, err := b.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	var out []Result
	var st *guestState
	for _, s := range specs {
		start := time.Now()
		img, cached, err := b.buildOne(ctx, s, &st)
		if err != nil {
			return out, fmt.Errorf("service %q: build: %w", s.Service.Name, err)
		}
		out = append(out, Result{Service: s.Service.Name, Image: img, Cached: cached, Duration: time.Since(start)})
	}
	return out, nil
}

// builder starts the builder VM unless *st says it runs already.
func (b *Builder) builder(ctx context.Context, st **guestState) error {
	if *st != nil {
		return nil
	}
	img, err := EnsureImage(ctx, b.Store, b.Report)
	if err != nil {
		return err
	}
	start := time.Now()
	if *st, err = b.start(ctx, img.Ref); err != nil {
		return err
	}
	b.report("the builder VM of project %s is ready (%.1fs)", b.Project.Name, time.Since(start).Seconds())
	return nil
}

// job is one Spec on its way through the builder.
type job struct {
	Spec
	dockerfile []byte
	args       map[string]string
	ref        string // the canonical image reference the result gets
	bases      []base
	contexts   []buildContext // the context, then build.additional_contexts
	ignoreFile string         // the host's ignore file, "" for none
	key        string         // see sum
}

func (b *Builder) buildOne(ctx context.Context, s Spec, st **guestState) (_ oci.Image, cached bool, err error) {
	j, err := b.newJob(ctx, s)
	if err != nil {
		return oci.Image{}, false, err
	}
	if img, ok := b.unchanged(j); ok {
		j.say("unchanged since its last build: every step would come from the cache")
		return img, true, nil
	}
	if err := b.builder(ctx, st); err != nil {
		return oci.Image{}, false, err
	}
	img, err := b.runJob(ctx, j, *st)
	return img, false, err
}

// runJob builds a job in the builder and imports its image.
func (b *Builder) runJob(ctx context.Context, j *job, st *guestState) (oci.Image, error) {
	tags, err := b.loadBases(ctx, j.bases, st)
	if err != nil {
		return oci.Image{}, err
	}
	if err := b.sendContext(ctx, j, st); err != nil {
		return oci.Image{}, err
	}
	if err := b.sendDockerfile(ctx, j); err != nil {
		return oci.Image{}, err
	}
	if err := b.bud(ctx, j, tags); err != nil {
		return oci.Image{}, err
	}
	img, err := b.fetch(ctx, j)
	if err != nil {
		return oci.Image{}, err
	}
	return img, b.record(j, img)
}

// say gives the job's output a line of vmcompose's own.
func (j *job) say(line string) {
	if j.Out != nil && !j.Quiet {
		j.Out(line)
	}
}

// hostDockerfile is the Dockerfile's path on the host, "" for
// dockerfile_inline.
func (j *job) hostDockerfile() string {
	if j.Service.Build.DockerfileInline != "" {
		return ""
	}
	return dockerfilePath(j.Service.Build.Context, j.Service.Build.Dockerfile)
}

// sum sums up everything a build's result depends on but the builder's
// own cache: two builds with one sum make the same image (buildah would
// take every step from its cache), so the second is skipped.
func (j *job) sum() string {
	h := sha256.New()
	w := func(parts ...string) {
		for _, p := range parts {
			fmt.Fprintf(h, "%d:%s", len(p), p)
		}
	}
	w("dockerfile", string(j.dockerfile))
	for _, c := range j.contexts {
		w("context", c.key, c.manifest.Digest())
	}
	for _, bs := range j.bases {
		w("base", bs.ref.String(), bs.img.Digest.String())
	}
	for _, a := range budArgs(j) {
		w("arg", a)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// unchanged is the image of the job's last build when the job has its key
// and the store's tag still names that image.
func (b *Builder) unchanged(j *job) (oci.Image, bool) {
	if j.NoCache || j.Service.Build.NoCache {
		return oci.Image{}, false
	}
	r, ok, err := ReadRecord(b.Dir, j.Service.Name)
	if err != nil || !ok || r.Key != j.key {
		return oci.Image{}, false
	}
	img, err := b.Store.Image(j.Service.Image)
	if err != nil || img.Digest.String() != r.Image {
		return oci.Image{}, false
	}
	return img, true
}

// newJob reads what a spec builds from: its Dockerfile, the bases it
// names (from the store), the context's listing, and their key.
func (b *Builder) newJob(ctx context.Context, s Spec) (*job, error) {
	j, err := readJob(s)
	if err != nil {
		return nil, err
	}
	refs, err := Bases(j.dockerfile, j.args, j.Service.Build.Target)
	if err != nil {
		return nil, err
	}
	// A name that an additional context has is that context, not an image.
	refs = slices.DeleteFunc(refs, func(r string) bool { _, ok := j.Service.Build.AdditionalContexts[r]; return ok })
	if j.bases, err = b.resolveBases(ctx, refs, j.Pull || j.Service.Build.Pull); err != nil {
		return nil, err
	}
	if j.contexts, err = listContexts(j.Service.Name, j.Service.Build, j.hostDockerfile()); err != nil {
		return nil, err
	}
	j.ignoreFile = IgnoreFile(j.Service.Build.Context, j.hostDockerfile())
	j.key = j.sum()
	return j, nil
}

func readJob(s Spec) (*job, error) {
	cfg := s.Service.Build
	j := &job{Spec: s, args: map[string]string{}}
	for k, v := range cfg.Args {
		if v != nil {
			j.args[k] = *v
		}
	}
	for k, v := range s.Args {
		j.args[k] = v
	}
	r, err := name.ParseReference(s.Service.Image)
	if err != nil {
		return nil, fmt.Errorf("image: %q: %w", s.Service.Image, err)
	}
	j.ref = r.Name()
	if cfg.DockerfileInline != "" {
		j.dockerfile = []byte(cfg.DockerfileInline)
		return j, nil
	}
	if j.dockerfile, err = os.ReadFile(dockerfilePath(cfg.Context, cfg.Dockerfile)); err != nil {
		return nil, fmt.Errorf("dockerfile: %w", err)
	}
	return j, nil
}

// buildContext is a directory a build reads: its context, or an
// additional context.
type buildContext struct {
	name     string // of an additional context; "" for the context
	key      string // its copy's name in the builder: service[@name]
	dir      string
	manifest Manifest
}

// listContexts lists what a build sends: its context as docker would
// send it for dockerfile, then each additional context (a local
// directory, its own .dockerignore honoured), by name.
func listContexts(service string, cfg *types.BuildConfig, dockerfile string) ([]buildContext, error) {
	man, err := ListContext(cfg.Context, dockerfile)
	if err != nil {
		return nil, fmt.Errorf("context %s: %w", cfg.Context, err)
	}
	out := []buildContext{{key: service, dir: cfg.Context, manifest: man}}
	for _, name := range slices.Sorted(maps.Keys(cfg.AdditionalContexts)) {
		dir := cfg.AdditionalContexts[name] // compose-go made it absolute
		man, err := ListContext(dir, "")
		if err != nil {
			return nil, fmt.Errorf("additional_contexts: %s: %w", name, err)
		}
		out = append(out, buildContext{name: name, key: service + "@" + name, dir: dir, manifest: man})
	}
	return out, nil
}

// guestContext is where the context copy key is in the builder VM.
func guestContext(key string) string { return path.Join(guestDir, "ctx", key) }

// budArgs is the `buildah bud` command line of a job.
func budArgs(j *job) []string {
	cfg := j.Service.Build
	// chroot isolation runs RUN with the VM's network; only oci's (crun)
	// can take it away, and then ignores --add-host.
	isolation := "chroot"
	if cfg.Network == "none" {
		isolation = "oci"
	}
	args := []string{"bud", "--layers", "--pull=never", "--isolation", isolation,
		"-f", path.Join(guestDir, "df", j.Service.Name, "Dockerfile"), "-t", j.ref}
	// The ignore file goes beside the Dockerfile (it may be outside the
	// context): buildah applies it to COPY as docker does, to the
	// Dockerfile and the ignore file that the context holds anyway.
	ignore := "/dev/null"
	if j.ignoreFile != "" {
		ignore = path.Join(guestDir, "df", j.Service.Name, ".dockerignore")
	}
	args = append(args, "--ignorefile", ignore)
	if cfg.Network == "none" {
		args = append(args, "--network", "none")
	}
	args = append(args, optionArgs(j)...)
	for _, c := range j.contexts[1:] {
		args = append(args, "--build-context", c.name+"="+guestContext(c.key))
	}
	return append(args, guestContext(j.Service.Name))
}

// optionArgs are the bud flags of the build: fields that buildah takes as
// they are.
func optionArgs(j *job) []string {
	cfg := j.Service.Build
	var args []string
	if cfg.Target != "" {
		args = append(args, "--target", cfg.Target)
	}
	if j.NoCache || cfg.NoCache {
		args = append(args, "--no-cache")
	}
	for _, k := range slices.Sorted(maps.Keys(j.args)) {
		args = append(args, "--build-arg", k+"="+j.args[k])
	}
	for _, k := range slices.Sorted(maps.Keys(cfg.Labels)) {
		args = append(args, "--label", k+"="+cfg.Labels[k])
	}
	for _, ref := range cfg.Secrets {
		id := cmp.Or(ref.Target, ref.Source)
		args = append(args, "--secret", "id="+id+",src=/run/secrets/"+ref.Source)
	}
	for _, host := range slices.Sorted(maps.Keys(cfg.ExtraHosts)) {
		for _, ip := range cfg.ExtraHosts[host] {
			args = append(args, "--add-host", host+":"+ip)
		}
	}
	return args
}

// budScript names the bases as the Dockerfile does ($VMCOMPOSE_TAGS:
// "ID REF KEY" lines, skipped when the name is given already), builds,
// and pushes the image into the builder's layout for fetch.
const budScript = prelude + `printf '%s\n' "$VMCOMPOSE_TAGS" | while read -r id ref key; do
  [ -n "$id" ] || continue
  [ "$(cat $v/tags/$key 2>/dev/null)" = "$id" ] && continue
  b tag "$id" "$ref"
  echo "$id" > $v/tags/$key
done
b "$@"
` + pushCommand

func (b *Builder) bud(ctx context.Context, j *job, tags []baseTag) error {
	var lines []string
	for _, t := range tags {
		lines = append(lines, t.id+" "+t.ref+" "+t.key)
	}
	env := []string{"VMCOMPOSE_TAGS=" + strings.Join(lines, "\n"), "VMCOMPOSE_SERVICE=" + j.Service.Name, "VMCOMPOSE_REF=" + j.ref}
	var log tail
	out := &lineWriter{fn: func(string) {}}
	if j.Out != nil && !j.Quiet {
		out.fn = j.Out
	}
	w := multiWriter{&log, out}
	code, err := b.exec(ctx, budScript, budArgs(j), env, nil, w, w)
	out.Flush()
	if err != nil {
		return err
	}
	if code == 0 {
		return nil
	}
	if line, instr, exit, ok := FailedStep(log.buf, j.dockerfile, j.args); ok {
		return &StepError{Dockerfile: j.dockerfileName(), Line: line, Instruction: instr, Code: exit}
	}
	return &StepError{Dockerfile: j.dockerfileName(), Message: log.lastLine(), Code: code}
}

// dockerfileName is how errors name the Dockerfile.
func (j *job) dockerfileName() string {
	if j.Service.Build.DockerfileInline != "" {
		return "dockerfile_inline"
	}
	return filepath.Base(dockerfilePath(j.Service.Build.Context, j.Service.Build.Dockerfile))
}

type multiWriter []interface{ Write([]byte) (int, error) }

func (m multiWriter) Write(p []byte) (int, error) {
	for _, w := range m {
		w.Write(p)
	}
	return len(p), nil
}
