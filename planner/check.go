package planner

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
)

// Problems says, service by service, why up would refuse to run each
// enabled service of the project: the reasons of the operations Up would
// mark blocked, in the order Up gives them. Warnings are what up would
// run anyway but not as written. `vmcompose config` prints both.
func Problems(desired Desired) (problems map[string][]string, warnings []string) {
	return check(desired, desired.Project.Services, nil, nil)
}

// check finds what makes each of services (the services Up plans, with
// depends_on reduced to them) impossible to run as the compose file says:
// what the service alone gets wrong, what desired.Problems brings from the
// host, what its dependencies cannot give it, and the named volumes it
// cannot mount as they must be (see volumeProblems), counting the VMs of
// other services that run (running: their number by service).
func check(desired Desired, services types.Services, scale map[string]int, running map[string]int) (map[string][]string, []string) {
	out := map[string][]string{}
	var warnings []string
	for _, name := range slices.Sorted(maps.Keys(services)) {
		svc := services[name]
		out[name] = append(out[name], ServiceProblems(desired.Project, svc)...)
		out[name] = append(out[name], desired.Problems[name]...)
		for _, dep := range slices.Sorted(maps.Keys(svc.DependsOn)) {
			msg := healthProblem(svc.DependsOn[dep], dep, services[dep])
			switch {
			case msg == "":
			case svc.DependsOn[dep].Required:
				out[name] = append(out[name], msg)
			default:
				warnings = append(warnings, fmt.Sprintf("service %q: %s (required: false, so %s starts without waiting)", name, msg, name))
			}
		}
	}
	for name, msgs := range volumeProblems(desired, services, scale, running) {
		out[name] = append(out[name], msgs...)
	}
	maps.DeleteFunc(out, func(_ string, p []string) bool { return len(p) == 0 })
	return out, warnings
}

// ServiceProblems is what a service's own fields ask that vmcompose
// cannot do, or that cannot mean anything. `run` refuses them as up does,
// with what project.Load found (its Problems).
func ServiceProblems(p *types.Project, svc types.ServiceConfig) []string {
	var out []string
	if svc.Image == "" && svc.Build == nil {
		out = append(out, "no image: set image: to the reference of the image to run")
	}
	if svc.Image != "" && !isReference(svc.Image) {
		out = append(out, fmt.Sprintf("image: %q is not an image reference: write [registry/]repository[:tag][@sha256:digest], the repository in lowercase", svc.Image))
	}
	out = append(out, buildProblems(p, svc)...)
	for _, ref := range svc.Secrets {
		out = appendProblem(out, swarmProblem("secrets", ref.Source, types.FileObjectConfig(p.Secrets[ref.Source])))
		out = appendProblem(out, refProblem("secrets", types.FileReferenceConfig(ref)))
	}
	for _, ref := range svc.Configs {
		out = appendProblem(out, swarmProblem("configs", ref.Source, types.FileObjectConfig(p.Configs[ref.Source])))
		out = appendProblem(out, refProblem("configs", types.FileReferenceConfig(ref)))
	}
	if msg := restartProblem(svc); msg != "" {
		out = append(out, msg)
	}
	return out
}

// swarmProblem refuses what only a swarm gives a secret or a config (field
// is "secrets" or "configs"): an external object, a driver, a template
// driver. Without a swarm there is no store to take them from, and a
// service that started without its file would fail later and less
// clearly.
func swarmProblem(field, name string, def types.FileObjectConfig) string {
	fix := "give it a file: or environment: instead"
	if field == "configs" {
		fix = "give it a file:, environment: or content: instead"
	}
	switch {
	case bool(def.External):
		return fmt.Sprintf("%s: %q is external: true, which only a swarm provides (vmcompose has none): %s", field, name, fix)
	case def.Driver != "":
		return fmt.Sprintf("%s: %q has driver: %q, which only a swarm runs (vmcompose has none): remove driver: and %s", field, name, def.Driver, fix)
	case def.TemplateDriver != "":
		return fmt.Sprintf("%s: %q has template_driver: %q, which only a swarm runs (vmcompose has none): remove template_driver: and give it the rendered content", field, name, def.TemplateDriver)
	}
	return ""
}

// refProblem is what a service's secret or config ref asks that the
// guest cannot give the file: owners by name (a guest's names are the
// image's, unknown to the host; docker's swarm takes numbers too), or a
// mode that is no file mode.
func refProblem(field string, ref types.FileReferenceConfig) string {
	for _, id := range [][2]string{{"uid", ref.UID}, {"gid", ref.GID}} {
		if n, err := strconv.Atoi(id[1]); id[1] != "" && (err != nil || n < 0) {
			return fmt.Sprintf("%s: %q: %s: %q is not a number of 0 or more: give the numeric %s (the host cannot look names up in the image)", field, ref.Source, id[0], id[1], id[0])
		}
	}
	switch {
	case ref.Mode == nil:
	case *ref.Mode < 0 || *ref.Mode > 0o7777:
		return fmt.Sprintf("%s: %q: mode: %#o is not a file mode: give one from 0 to 07777, e.g. 0440", field, ref.Source, int64(*ref.Mode))
	case *ref.Mode == 0:
		return fmt.Sprintf("%s: %q: mode: 0 leaves the file unreadable: give its owner read access at least, e.g. 0400", field, ref.Source)
	}
	return ""
}

func appendProblem(list []string, msg string) []string {
	if msg == "" {
		return list
	}
	return append(list, msg)
}

// SecretTarget is where a service's secret ref is in its VM: docker's
// /run/secrets/<target or source>, or the target itself when it is
// absolute.
func SecretTarget(ref types.ServiceSecretConfig) string {
	switch {
	case ref.Target == "":
		return path.Join(secretsDir, ref.Source)
	case path.IsAbs(ref.Target):
		return path.Clean(ref.Target)
	}
	return path.Join(secretsDir, ref.Target)
}

// ConfigTarget is where a service's config ref is in its VM: its target,
// /<source> when it has none (a relative target is under /, as docker
// compose takes it).
func ConfigTarget(ref types.ServiceConfigObjConfig) string {
	if ref.Target == "" {
		return "/" + ref.Source
	}
	return path.Join("/", ref.Target)
}

// secretsDir is agent.SecretsDir, which the planner does not import.
const secretsDir = "/run/secrets"

// SecretPaths are the guest paths that hold a service's secrets: the
// /run/secrets tmpfs when a secret is there, and each secret with an
// absolute target elsewhere (a read-only bind mount). Nothing may be
// synced into them (watch's sync: must refuse a target in them).
func SecretPaths(svc types.ServiceConfig) []string {
	var out []string
	for _, ref := range svc.Secrets {
		t := SecretTarget(ref)
		if strings.HasPrefix(t, secretsDir+"/") {
			t = secretsDir
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out
}

// restartProblem is why the supervisor could not apply the service's
// restart policy, or "": it would fail the VM's creation after others
// booted.
func restartProblem(svc types.ServiceConfig) string {
	if _, err := ParseRestart(svc); err != nil {
		return err.Error()
	}
	return ""
}

// healthProblem says why the dependency dep can never be healthy, or "".
// vmcompose runs the compose file's healthcheck only, not an image's
// HEALTHCHECK, so a dependency without one is never healthy.
func healthProblem(cfg types.ServiceDependency, dep string, svc types.ServiceConfig) string {
	if cfg.Condition != types.ServiceConditionHealthy || hasHealthcheck(svc.HealthCheck) {
		return ""
	}
	return fmt.Sprintf("depends_on.%s.condition: service_healthy, but %s has no healthcheck (an image's HEALTHCHECK is not run): add a healthcheck: to %s, or use condition: service_started", dep, dep, dep)
}

// hasHealthcheck is whether the supervisor runs a check (as
// reconcile.ParseHealth reads it).
func hasHealthcheck(hc *types.HealthCheckConfig) bool {
	return hc != nil && !hc.Disable && len(hc.Test) > 0 && hc.Test[0] != "NONE"
}
