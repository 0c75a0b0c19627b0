package build

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/compose-spec/compose-go/v2/types"
	"gopkg.in/yaml.v3"

	"github.com/vmcompose/vmcompose/internal/atomicfile"
	"github.com/vmcompose/vmcompose/internal/flock"
	"github.com/vmcompose/vmcompose/oci"
)

// The builder VM is the only service of a project of its own, made from
// the compose file this package writes into the builder's state dir and
// run by a supervisor there, as any project is. Its cache volume, named
// after the user's project, holds buildah's storage (layer cache), the
// contexts sent so far and the bases loaded: it survives `down` and the
// builder VM's recreation.
const (
	builderService = "buildah"
	// guestRoot is the cache volume in the guest. Overlay storage needs
	// an ext4 disk under it: on the VM's overlay root it is unreliable,
	// and on virtiofs it fails.
	guestRoot = "/var/lib/containers"
	guestDir  = guestRoot + "/vmcompose"
	// The builder's size: buildah and a small build need ~120 MB, RUN
	// steps that install packages or compile want more.
	builderMemory = "2g"
	builderVCPUs  = 2
	// Under TCG, buildah's code (a big Go binary, run anew for every
	// step) outgrows the 64 MiB translation cache a service gets: with
	// 1 GiB (filled on demand) a one-file rebuild took 7.1–7.6 s here
	// against 8.7–11.2 s.
	builderTranslationCache = "1g"
	cacheSize               = "20g"
)

// Builder builds the images of one project's build: services in that
// project's builder VM.
type Builder struct {
	// Project is the user's project.
	Project *types.Project
	// Dir is the builder's state dir (see StateName).
	Dir   string
	Store *oci.Store
	// Up creates or starts the builder VM: the project of the compose
	// file file, its supervisor's state dir dir, converged as `up
	// --wait` does.
	Up func(ctx context.Context, dir, file string) error
	// Report gets a line for what takes a while besides the builds
	// themselves (making the builder image, booting the builder).
	Report func(string)
}

// StateName is the builder state dir of project, relative to vmcompose's
// state root: under _b (no project's name starts with "_"; short, as the
// network's unix sockets below it must be), named after the builder
// project, as a supervisor's state dir is.
func StateName(project string) string { return filepath.Join("_b", ProjectName(project)) }

// ProjectName is the builder project's name, which its messages show.
func ProjectName(project string) string { return project + "-builder" }

// CacheVolume is the name of the volume that holds project's build cache.
func CacheVolume(project string) string { return project + "-builder-cache" }

func (b *Builder) report(format string, args ...any) {
	if b.Report != nil {
		b.Report(fmt.Sprintf(format, args...))
	}
}

// start makes sure the builder VM runs, from image, with the project's
// build secrets, and returns how the guest is now.
func (b *Builder) start(ctx context.Context, image string) (*guestState, error) {
	file, err := b.writeCompose(image)
	if err != nil {
		return nil, err
	}
	if err := b.Up(ctx, b.Dir, file); err != nil {
		return nil, fmt.Errorf("starting the builder VM: %w", err)
	}
	return b.readState(ctx)
}

// lock keeps two builds of the project from using its builder at once.
func (b *Builder) lock(ctx context.Context) (func(), error) {
	if err := os.MkdirAll(b.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("builder state: %w", err)
	}
	unlock, err := flock.Lock(ctx, filepath.Join(b.Dir, "build.lock"), false)
	if err != nil {
		return nil, fmt.Errorf("waiting for another build of project %s: %w", b.Project.Name, err)
	}
	return unlock, nil
}

// writeCompose writes the builder project's compose file and returns its
// path. It changes only when the builder image or the project's build
// secrets do, so an up of an unchanged builder does nothing.
func (b *Builder) writeCompose(image string) (string, error) {
	svc := map[string]any{
		"image":       image,
		"pull_policy": "never",
		// A builder that ended (a VM killed, a network process gone
		// with an old supervisor) boots again rather than fail builds.
		"restart": "unless-stopped",
		"command": []string{"sleep", "infinity"},
		"volumes": []string{"cache:" + guestRoot},
		"x-vm":    map[string]any{"memory": builderMemory, "vcpus": builderVCPUs, "translation_cache": builderTranslationCache},
	}
	secrets := b.secrets()
	if len(secrets) > 0 {
		svc["secrets"] = slices.Sorted(maps.Keys(secrets))
	}
	doc := map[string]any{
		"name":     ProjectName(b.Project.Name),
		"services": map[string]any{builderService: svc},
		"volumes": map[string]any{"cache": map[string]any{
			"name":        CacheVolume(b.Project.Name),
			"driver_opts": map[string]string{"size": cacheSize},
		}},
	}
	if len(secrets) > 0 {
		doc["secrets"] = secrets
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return "", err
	}
	file := filepath.Join(b.Dir, "compose.yaml")
	if old, err := os.ReadFile(file); err == nil && string(old) == string(out) {
		return file, nil
	}
	if err := atomicfile.WriteFile(file, out, 0o600); err != nil {
		return "", fmt.Errorf("builder compose file: %w", err)
	}
	return file, nil
}

// secrets are the project's secrets that some service's build: uses, as
// the builder project defines them (a file by absolute path, or an
// environment variable): they are files in /run/secrets of the builder
// VM, which RUN --mount=type=secret reads.
func (b *Builder) secrets() map[string]any {
	out := map[string]any{}
	for _, svc := range b.Project.Services {
		if svc.Build == nil {
			continue
		}
		for _, ref := range svc.Build.Secrets {
			def, ok := b.Project.Secrets[ref.Source]
			switch {
			case !ok:
			case def.Environment != "":
				out[ref.Source] = map[string]string{"environment": def.Environment}
			case def.File != "":
				out[ref.Source] = map[string]string{"file": def.File}
			}
		}
	}
	return out
}
