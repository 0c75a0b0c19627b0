package project

import (
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"slices"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/planner"
)

// MaxContent bounds one secret or config, and twice it all those of one
// service: they travel to the guest in the agent's start request, whose
// header is bounded (docker swarm takes secrets of up to 500 KB).
const MaxContent = 1 << 20

// readContents reads the content of every top-level secret and config
// that a service uses (disabled ones too, for run): a file, a variable of
// the project's environment, or a config's content:. What cannot be read
// is a problem of each service that uses it, so that plan blocks them and
// up refuses them before anything boots. What only a swarm provides
// (external, driver, template_driver) is left to the planner to refuse.
// The contents are for the guest alone: never print, log or record them.
func readContents(p *types.Project) (map[string][]byte, map[string][]string) {
	data := map[string][]byte{}
	failed := map[string]string{}
	read := func(field, name string, def types.FileObjectConfig) string {
		k := planner.ContentKey(field, name)
		if _, ok := data[k]; ok || bool(def.External) || def.Driver != "" || def.TemplateDriver != "" {
			return ""
		}
		if msg, ok := failed[k]; ok {
			return msg
		}
		b, err := contentOf(field, name, def, p.Environment)
		if err != nil {
			failed[k] = err.Error()
			return failed[k]
		}
		data[k] = b
		return ""
	}
	problems := map[string][]string{}
	all := p.AllServices()
	for _, name := range slices.Sorted(maps.Keys(all)) {
		svc := all[name]
		var msgs []string
		total := 0
		for _, ref := range svc.Secrets {
			msgs = appendNonEmpty(msgs, read("secrets", ref.Source, types.FileObjectConfig(p.Secrets[ref.Source])))
			total += len(data[planner.ContentKey("secrets", ref.Source)])
		}
		for _, ref := range svc.Configs {
			msgs = appendNonEmpty(msgs, read("configs", ref.Source, types.FileObjectConfig(p.Configs[ref.Source])))
			total += len(data[planner.ContentKey("configs", ref.Source)])
		}
		if total > 2*MaxContent {
			msgs = append(msgs, fmt.Sprintf("secrets: and configs: hold %d bytes together, more than the %d a VM takes at its start: bind-mount the larger files instead", total, 2*MaxContent))
		}
		if len(msgs) > 0 {
			problems[name] = msgs
		}
	}
	return data, problems
}

func appendNonEmpty(list []string, s string) []string {
	if s == "" {
		return list
	}
	return append(list, s)
}

// contentOf reads one secret's or config's content (field is "secrets" or
// "configs"). compose-go has made file: absolute.
func contentOf(field, name string, def types.FileObjectConfig, env types.Mapping) ([]byte, error) {
	what := fmt.Sprintf("%s: %q", field, name)
	switch {
	case def.File != "":
		fi, err := os.Stat(def.File)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("%s: file %s does not exist: create it, or point file: at an existing file", what, def.File)
		case err != nil:
			return nil, fmt.Errorf("%s: file %s: %w", what, def.File, err)
		case !fi.Mode().IsRegular():
			return nil, fmt.Errorf("%s: file %s is not a regular file: point file: at a file", what, def.File)
		case fi.Size() > MaxContent:
			return nil, fmt.Errorf("%s: file %s has %d bytes, more than the %d a secret or config may have: bind-mount it instead", what, def.File, fi.Size(), MaxContent)
		}
		b, err := os.ReadFile(def.File)
		if err != nil {
			return nil, fmt.Errorf("%s: file %s: %w", what, def.File, err)
		}
		return b, nil
	case def.Environment != "":
		v, ok := env[def.Environment]
		if !ok {
			return nil, fmt.Errorf("%s: environment variable %s is not set: set it (in the environment or .env), or use file:", what, def.Environment)
		}
		if len(v) > MaxContent {
			return nil, fmt.Errorf("%s: environment variable %s has %d bytes, more than the %d a secret or config may have: use a bind mount instead", what, def.Environment, len(v), MaxContent)
		}
		return []byte(v), nil
	case field == "configs" && def.Content != "":
		if len(def.Content) > MaxContent {
			return nil, fmt.Errorf("%s: content: has %d bytes, more than the %d a config may have: use a bind mount instead", what, len(def.Content), MaxContent)
		}
		return []byte(def.Content), nil
	case field == "configs":
		return nil, fmt.Errorf("%s has no file:, environment: or content:: give it one", what)
	}
	return nil, fmt.Errorf("%s has no file: or environment:: give it one", what)
}
