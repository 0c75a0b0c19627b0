package project

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"slices"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/planner"
)

// Backends are the x-vm.backend values this build can run, by GOOS; the
// first is the default.
var Backends = map[string][]string{"linux": {"qemu"}}

// problems finds, service by service, what up must refuse that only the
// host can tell: a bind mount whose source cannot be shared with a VM, an
// x-vm.backend this build has not, a build: whose files are not there. The planner blocks those services with
// them (planner.Desired.Problems), so plan and up say the same.
func problems(p *types.Project, vms map[string]VM) map[string][]string {
	out := map[string][]string{}
	all := p.AllServices()
	for _, name := range slices.Sorted(maps.Keys(all)) {
		for _, v := range all[name].Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := CheckBind(v); err != nil {
				out[name] = append(out[name], err.Error())
			}
		}
		if b := vms[name].Backend; b != "" && !slices.Contains(Backends[runtime.GOOS], b) {
			out[name] = append(out[name], backendProblem(b))
		}
		if msgs := buildProblems(p, all[name]); len(msgs) > 0 {
			out[name] = append(out[name], msgs...)
		}
	}
	return out
}

func backendProblem(backend string) string {
	have := Backends[runtime.GOOS]
	if len(have) == 0 {
		return fmt.Sprintf("x-vm.backend: %q is not supported on %s yet: vmcompose runs VMs on Linux with qemu", backend, runtime.GOOS)
	}
	return fmt.Sprintf("x-vm.backend: %q is not supported on %s yet: set it to %s or remove it", backend, runtime.GOOS, have[0])
}

// CheckBind checks a bind mount's source, which compose-go has made
// absolute (relative paths are the project directory's): it returns what
// is there, nil when nothing is and bind.create_host_path lets up create
// a directory, as docker compose does (the short syntax always does).
// Only a directory or a regular file can be shared with a VM: virtiofs
// carries files, not the host kernel objects behind a socket or a device.
func CheckBind(v types.ServiceVolumeConfig) (fs.FileInfo, error) {
	what := fmt.Sprintf("volumes: bind mount of %s at %s", v.Source, v.Target)
	if !filepath.IsAbs(v.Source) {
		return nil, fmt.Errorf("%s: the source is not an absolute path", what)
	}
	fi, err := os.Stat(v.Source)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if v.Bind != nil && !bool(v.Bind.CreateHostPath) {
			return nil, fmt.Errorf("%s: the source does not exist, and bind.create_host_path is false: create it, or drop create_host_path: false to have it created", what)
		}
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("%s: %w", what, err)
	case !fi.IsDir() && !fi.Mode().IsRegular():
		return nil, fmt.Errorf("%s: the source is a %s, which a VM cannot reach (virtiofs shares only directories and regular files): remove this volume, and reach the host's service over the network instead", what, fileKind(fi.Mode()))
	}
	return fi, nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSocket != 0:
		return "unix socket"
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

// watchProblems finds, service by service, the develop.watch rules whose
// path does not exist: `vmcompose watch` refuses them (planner's
// WatchProblems has the rest); up does not care.
func watchProblems(p *types.Project) map[string][]string {
	out := map[string][]string{}
	for name, svc := range p.AllServices() {
		if svc.Develop == nil {
			continue
		}
		for i, t := range svc.Develop.Watch {
			if _, err := os.Lstat(t.Path); errors.Is(err, fs.ErrNotExist) {
				out[name] = append(out[name], fmt.Sprintf("develop.watch[%d] (path %s): the path does not exist: create it, or correct path: (a relative path is the project directory's)", i, t.Path))
			}
		}
	}
	return out
}

// buildProblems finds what a build: service's builder would not find on
// the host: the context directory, the Dockerfile (relative to the
// context unless absolute), the local additional_contexts, the files and
// variables of its build secrets. A context that is fetched is the planner's to
// refuse.
func buildProblems(p *types.Project, svc types.ServiceConfig) []string {
	b := svc.Build
	if b == nil {
		return nil
	}
	var out []string
	if !planner.RemoteContext(b.Context) {
		if msg := dirProblem("build.context", b.Context); msg != "" {
			out = append(out, msg)
		} else if b.DockerfileInline == "" {
			out = appendNonEmpty(out, dockerfileProblem(b))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(b.AdditionalContexts)) {
		if v := b.AdditionalContexts[k]; filepath.IsAbs(v) {
			out = appendNonEmpty(out, dirProblem("build.additional_contexts."+k, v))
		}
	}
	for _, ref := range b.Secrets {
		def := p.Secrets[ref.Source]
		if _, err := os.Stat(def.File); def.File != "" && err != nil {
			out = append(out, fmt.Sprintf("build.secrets: %q: file %s: %v: create it, or point file: at an existing file", ref.Source, def.File, errors.Unwrap(err)))
		}
		if _, ok := p.Environment[def.Environment]; def.Environment != "" && !ok {
			out = append(out, fmt.Sprintf("build.secrets: %q: environment variable %s is not set: set it (in the environment or .env), or use file:", ref.Source, def.Environment))
		}
	}
	return out
}

// dirProblem says why dir (absolute: compose-go resolved it against the
// project directory) is no directory to build from, or "".
func dirProblem(field, dir string) string {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("%s: %s does not exist: create it, or correct the path (a relative path is the project directory's)", field, dir)
	case err != nil:
		return fmt.Sprintf("%s: %s: %v", field, dir, err)
	case !fi.IsDir():
		return fmt.Sprintf("%s: %s is not a directory: give the directory to build from", field, dir)
	}
	return ""
}

func dockerfileProblem(b *types.BuildConfig) string {
	f := b.Dockerfile
	if !filepath.IsAbs(f) {
		f = filepath.Join(b.Context, f)
	}
	fi, err := os.Stat(f)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Sprintf("build.dockerfile: %s does not exist: create it, or set dockerfile: (relative to the context) or dockerfile_inline:", f)
	case err != nil:
		return fmt.Sprintf("build.dockerfile: %s: %v", f, err)
	case !fi.Mode().IsRegular():
		return fmt.Sprintf("build.dockerfile: %s is not a file: point dockerfile: at the Dockerfile", f)
	}
	return ""
}
