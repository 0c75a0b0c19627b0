package planner

import (
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/google/go-containerregistry/pkg/name"
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
		out[name] = append(out[name], serviceProblems(desired.Project, svc)...)
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

// serviceProblems is what a service's own fields ask that vmcompose cannot
// do, or that cannot mean anything.
func serviceProblems(p *types.Project, svc types.ServiceConfig) []string {
	var out []string
	switch {
	case svc.Build != nil && svc.Image == "":
		out = append(out, "build: is not supported yet: build the image elsewhere and set image: to its reference")
	case svc.Build != nil:
		out = append(out, fmt.Sprintf("build: is not supported yet: build image %q elsewhere and `vmcompose image import` it (or push it to a registry), then remove build:", svc.Image))
	case svc.Image == "":
		out = append(out, "no image: set image: to the reference of the image to run")
	}
	if svc.Image != "" {
		if _, err := name.ParseReference(svc.Image); err != nil { // as oci's pull parses it
			out = append(out, fmt.Sprintf("image: %q is not an image reference: write [registry/]repository[:tag][@sha256:digest], the repository in lowercase", svc.Image))
		}
	}
	if len(svc.Secrets) > 0 {
		s := svc.Secrets[0]
		out = append(out, fileRefProblem("secrets", s.Source, secretTarget(s.Target, s.Source), relative(p, p.Secrets[s.Source].File)))
	}
	if len(svc.Configs) > 0 {
		c := svc.Configs[0]
		target := c.Target
		if target == "" {
			target = "/" + c.Source
		}
		out = append(out, fileRefProblem("configs", c.Source, target, relative(p, p.Configs[c.Source].File)))
	}
	if msg := restartProblem(svc); msg != "" {
		out = append(out, msg)
	}
	return out
}

// fileRefProblem refuses secrets: and configs:, which nothing mounts in a
// VM yet: the service would start and find no file.
func fileRefProblem(field, source, target, file string) string {
	if file == "" {
		file = "FILE"
	}
	return fmt.Sprintf("%s: %q is not supported yet: nothing would appear at %s in the VM: bind-mount a file there instead (volumes: [\"%s:%s:ro\"])",
		field, source, target, file, target)
}

// relative writes a path of the project directory as ./path, as the
// compose file would.
func relative(p *types.Project, file string) string {
	if rest, ok := strings.CutPrefix(file, strings.TrimSuffix(p.WorkingDir, "/")+"/"); ok && p.WorkingDir != "" {
		return "./" + rest
	}
	return file
}

// secretTarget is where docker mounts a secret: /run/secrets/<target or
// source>, or the target itself when it is absolute.
func secretTarget(target, source string) string {
	switch {
	case target == "":
		return "/run/secrets/" + source
	case path.IsAbs(target):
		return target
	}
	return "/run/secrets/" + target
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
