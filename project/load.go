package project

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// Options says which compose project to load. The zero value loads the
// project docker compose would load in the current directory.
type Options struct {
	// Files are the -f arguments, merged in order. Empty means
	// COMPOSE_FILE, then discovery of compose.yaml, compose.yml,
	// docker-compose.yaml or docker-compose.yml (and their override file)
	// in WorkingDir and its parents.
	Files []string
	// Name is the -p argument. Empty means COMPOSE_PROJECT_NAME, then the
	// top-level name:, then the project directory's name.
	Name string
	// Profiles are the --profile arguments. Empty means COMPOSE_PROFILES.
	Profiles []string
	// EnvFiles are the --env-file arguments. Empty means the project
	// directory's .env, when there is one.
	EnvFiles []string
	// ProjectDir is --project-directory: where relative paths and .env are
	// resolved. Empty means the directory of the first compose file.
	ProjectDir string
	// WorkingDir is where file discovery starts. Empty means the process's
	// working directory.
	WorkingDir string
	// Env is the environment used for interpolation and COMPOSE_*
	// variables. Nil means the process environment.
	Env []string
}

// Project is a loaded compose project: compose-go's model plus what
// vmcompose adds to it.
type Project struct {
	*types.Project
	// VMs holds the resolved VM settings of every service, the ones that
	// profiles disable included (run starts those).
	VMs map[string]VM
	// Problems holds, by service, why up must refuse to run it for what
	// only the host can tell, for planner.Desired.Problems.
	Problems map[string][]string
	// WatchProblems holds, by service, why `vmcompose watch` must refuse
	// its develop.watch rules for what only the host can tell, beside
	// planner.WatchProblems. Up ignores them.
	WatchProblems map[string][]string
	// Contents holds the content of every secret and config the services
	// use, by planner.ContentKey, for the guests that get them. It lives
	// in memory only: nothing may print, log or record it.
	Contents map[string][]byte
}

// Load reads, merges, interpolates and validates a compose project the way
// docker compose does, then validates every service's x-vm extension.
// Errors name the file, the service and the field.
func Load(ctx context.Context, opts Options) (*Project, error) {
	p, err := loadCompose(ctx, opts)
	if err != nil {
		return nil, err
	}
	vms := make(map[string]VM, len(p.Services))
	for name, svc := range p.AllServices() {
		vm, err := VMOf(svc)
		if err != nil {
			return nil, fmt.Errorf("%s: service %q: %w", filesOf(p), name, err)
		}
		vms[name] = vm
	}
	out := &Project{Project: p, VMs: vms, Problems: problems(p, vms), WatchProblems: watchProblems(p)}
	contents, unreadable := readContents(p)
	out.Contents = contents
	for name, msgs := range unreadable {
		out.Problems[name] = append(out.Problems[name], msgs...)
	}
	return out, nil
}

func loadCompose(ctx context.Context, opts Options) (*types.Project, error) {
	env := opts.Env
	if env == nil {
		env = os.Environ()
	}
	env = slices.DeleteFunc(slices.Clone(env), func(kv string) bool {
		// An empty COMPOSE_* variable means unset, not "the file named ''".
		k, v, _ := strings.Cut(kv, "=")
		return strings.HasPrefix(k, "COMPOSE_") && v == ""
	})
	wd := opts.ProjectDir
	if wd == "" {
		wd = opts.WorkingDir
	}
	if wd == "" {
		var err error
		if wd, err = os.Getwd(); err != nil {
			return nil, fmt.Errorf("finding the working directory: %w", err)
		}
	}
	// The order follows docker compose's own: the OS environment wins, then
	// --env-file (or .env), then COMPOSE_FILE and discovery; .env is read
	// again from the project directory once the files are known.
	fns := []cli.ProjectOptionsFn{
		cli.WithWorkingDirectory(opts.ProjectDir),
		cli.WithEnv(env),
		cli.WithEnv([]string{"PWD=" + wd}),
		cli.WithEnvFiles(opts.EnvFiles...),
		cli.WithDotEnv,
		cli.WithConfigFileEnv,
		withDiscovery(wd),
		cli.WithEnvFiles(opts.EnvFiles...),
		cli.WithDotEnv,
		cli.WithDefaultProfiles(opts.Profiles...),
		cli.WithName(opts.Name),
		cli.WithConsistency(false), // checkConsistency below, in linear time
		cli.WithResolvedPaths(true),
	}
	po, err := cli.NewProjectOptions(opts.Files, fns...)
	if err != nil {
		return nil, explain(err, opts.Files)
	}
	if len(po.ConfigPaths) == 0 {
		return nil, fmt.Errorf("no compose file found in %s or its parents: %w (create compose.yaml there, or name one with -f)", wd, ErrNoComposeFile)
	}
	p, err := po.LoadProject(ctx)
	if err == nil {
		err = checkConsistency(p)
	}
	if err != nil {
		return nil, explain(err, po.ConfigPaths)
	}
	return p, nil
}

// withDiscovery runs compose-go's file discovery from dir, which may differ
// from the project directory (docker compose discovers from the current
// directory even with --project-directory).
func withDiscovery(dir string) cli.ProjectOptionsFn {
	return func(o *cli.ProjectOptions) error {
		if len(o.ConfigPaths) > 0 {
			return nil
		}
		saved := o.WorkingDir
		o.WorkingDir = dir
		err := cli.WithDefaultConfigPath(o)
		o.WorkingDir = saved
		return err
	}
}

// ErrNoComposeFile is returned when discovery finds no compose file.
var ErrNoComposeFile = errors.New("no compose file")

var unknownField = regexp.MustCompile(`(\S+)\.([^.\s]+) false schema`)

// explain adds to compose-go's errors what their text lacks: the file when
// it is not named, and the fix.
func explain(err error, files []string) error {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "empty compose file"):
		err = fmt.Errorf("%w: add a services: section", err)
	case strings.Contains(msg, "include cycle detected"):
		err = fmt.Errorf("%w: a file must not include itself, directly or through others", err)
	case strings.Contains(msg, "env file") && strings.Contains(msg, "not found"):
		err = fmt.Errorf("%w: create it, or mark it optional with env_file: {path: ..., required: false}", err)
	case strings.Contains(msg, "refers to undefined network"):
		err = fmt.Errorf("%w: declare it under the top-level networks:", err)
	case strings.Contains(msg, "refers to undefined volume"):
		err = fmt.Errorf("%w: declare it under the top-level volumes:", err)
	case unknownField.MatchString(msg):
		m := unknownField.FindStringSubmatch(msg)
		err = fmt.Errorf("%s: %s: unknown field %q: check its spelling against the compose specification", strings.SplitN(msg, ": ", 2)[0], m[1], m[2])
	}
	for _, f := range files {
		if strings.Contains(err.Error(), f) {
			return err
		}
	}
	if len(files) > 0 {
		return fmt.Errorf("%s: %w", strings.Join(files, "+"), err)
	}
	return err
}

// filesOf names the compose files a project came from, for messages.
func filesOf(p *types.Project) string {
	if len(p.ComposeFiles) == 0 {
		return "compose file"
	}
	return strings.Join(p.ComposeFiles, "+")
}
