package reconcile

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/mattn/go-shellwords"

	"github.com/vmcompose/vmcompose/guest/agent"
)

// GuestSpec maps a compose service and its image config to what vminit
// runs: compose fields override the image's as docker does; the guest
// resolves argv, users and PATH against the image's own files.
func GuestSpec(svc types.ServiceConfig, img *v1.ConfigFile, hostname string) agent.Spec {
	spec := agent.Spec{
		Entrypoint: nilOrSlice(svc.Entrypoint),
		Command:    nilOrSlice(svc.Command),
		Env:        environment(svc.Environment),
		User:       svc.User,
		GroupAdd:   svc.GroupAdd,
		ShmSize:    int64(svc.ShmSize),
		ReadOnly:   svc.ReadOnly,
		WorkingDir: svc.WorkingDir,
		Hostname:   hostname,
		Domainname: svc.DomainName,
		DNS:        svc.DNS,
		DNSSearch:  svc.DNSSearch,
		DNSOptions: svc.DNSOpts,
		Sysctls:    svc.Sysctls,
		Init:       svc.Init,
		StopSignal: svc.StopSignal,
		Tty:        svc.Tty,
		OpenStdin:  svc.StdinOpen,
	}
	if svc.Hostname != "" {
		spec.Hostname = svc.Hostname
	}
	if img != nil {
		c := img.Config
		spec.Image = agent.ImageConfig{Entrypoint: c.Entrypoint, Cmd: c.Cmd, Env: c.Env, User: c.User, WorkingDir: c.WorkingDir, StopSignal: c.StopSignal}
	}
	if svc.StopGracePeriod != nil {
		d := time.Duration(*svc.StopGracePeriod)
		spec.StopGracePeriod = &d
	}
	for _, host := range slices.Sorted(maps.Keys(svc.ExtraHosts)) {
		for _, ip := range svc.ExtraHosts[host] {
			spec.Hosts = append(spec.Hosts, agent.HostEntry{IP: ip, Names: []string{host}})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(svc.Ulimits)) {
		u := svc.Ulimits[name]
		soft, hard := int64(u.Soft), int64(u.Hard)
		if u.Single != 0 {
			soft, hard = int64(u.Single), int64(u.Single)
		}
		spec.Ulimits = append(spec.Ulimits, agent.Ulimit{Name: name, Soft: soft, Hard: hard})
	}
	return spec
}

// nilOrSlice keeps compose-go's distinction between an unset command (nil)
// and one set to empty.
func nilOrSlice(c types.ShellCommand) []string {
	if c == nil {
		return nil
	}
	return append([]string{}, c...)
}

// environment renders compose's environment as KEY=VALUE, sorted; a key
// without a value (not set on the host either) stays bare, which removes it
// from the image's environment.
func environment(m types.MappingWithEquals) []string {
	var env []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if v := m[k]; v != nil {
			env = append(env, k+"="+*v)
		} else {
			env = append(env, k)
		}
	}
	return env
}

// Override applies `vmcompose run` arguments: -e KEY=VALUE entries, an
// --entrypoint (split as a shell would) that also clears the command, as
// docker's does, and a COMMAND.
func Override(spec *agent.Spec, env []string, entrypoint string, command []string) error {
	spec.Env = append(spec.Env, env...)
	if entrypoint != "" {
		argv, err := shellwords.Parse(entrypoint)
		if err != nil {
			return fmt.Errorf("--entrypoint %q: %w", entrypoint, err)
		}
		spec.Entrypoint, spec.Command = argv, []string{}
	}
	if len(command) > 0 {
		spec.Command = command
	}
	return nil
}
