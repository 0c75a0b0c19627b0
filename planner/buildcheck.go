package planner

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/google/go-containerregistry/pkg/name"
)

// ImageName is the image a service runs: its image:, or, for a build:
// service without one, <project>-<service>, the name docker compose tags
// the image it builds with (api.GetImageNameOrDefault, Separator "-").
// The project model keeps image: empty then, as docker compose's does, so
// that config prints what the file says and pull tells an image it may
// pull from one it builds.
func ImageName(projectName string, svc types.ServiceConfig) string {
	if svc.Image != "" {
		return svc.Image
	}
	return projectName + "-" + svc.Name
}

// HostPlatform is the one platform the builder builds for: the builder VM
// runs the host's architecture, and nothing emulates another in it.
var HostPlatform = "linux/" + runtime.GOARCH

// buildProblems is what a service's build: asks that the builder (buildah
// bud --layers --isolation chroot in a VM of the host's architecture) will
// not do. The host checks what is on disk (the context, the Dockerfile):
// project.Load's Problems.
func buildProblems(p *types.Project, svc types.ServiceConfig) []string {
	if svc.Build == nil {
		if svc.PullPolicy == types.PullPolicyBuild {
			return []string{"pull_policy: build needs build:: add a build: section, or use another pull_policy"}
		}
		return nil
	}
	b := svc.Build
	var out []string
	if RemoteContext(b.Context) {
		out = append(out, fmt.Sprintf("build.context: %q: git URLs are not supported: clone it and give the directory", b.Context))
	}
	out = append(out, platformProblems(svc)...)
	out = append(out, refusedBuildFields(b)...)
	for _, k := range slices.Sorted(maps.Keys(b.AdditionalContexts)) {
		if v := b.AdditionalContexts[k]; strings.Contains(v, "://") || strings.HasPrefix(v, types.ServicePrefix) || RemoteContext(v) {
			out = append(out, fmt.Sprintf("build.additional_contexts.%s: %q is not supported: only local directories are: give a directory", k, v))
		}
	}
	for _, ref := range b.Secrets {
		def := types.FileObjectConfig(p.Secrets[ref.Source])
		msg := swarmProblem("build.secrets", ref.Source, def)
		if msg == "" && def.File == "" && def.Environment == "" {
			msg = fmt.Sprintf("build.secrets: %q has no file: or environment:: give it one", ref.Source)
		}
		out = appendProblem(out, msg)
	}
	if svc.Image == "" {
		if ref := ImageName(p.Name, svc); !isReference(ref) {
			out = append(out, fmt.Sprintf("build: the image would be named %q, which is not an image reference: set image: to the name to give it", ref))
		}
	}
	for _, tag := range b.Tags {
		if !isReference(tag) {
			out = append(out, fmt.Sprintf("build.tags: %q is not an image reference: write [registry/]repository[:tag], the repository in lowercase", tag))
		}
	}
	return out
}

// RemoteContext is whether a build context is fetched rather than a local
// directory: the prefixes compose-go leaves unresolved (paths'
// isRemoteContext), or a git repository with a ref (repo.git#main),
// which compose-go has turned into a path under the project directory.
func RemoteContext(c string) bool {
	for _, prefix := range []string{"https://", "http://", "git://", "ssh://", "github.com/", "git@"} {
		if strings.HasPrefix(c, prefix) {
			return true
		}
	}
	return strings.Contains(c, ".git#")
}

func isReference(ref string) bool {
	_, err := name.ParseReference(ref) // as oci's pull parses it
	return err == nil
}

// platformProblems refuses a build for another platform than the host's
// (build.platforms, or the service's platform:).
func platformProblems(svc types.ServiceConfig) []string {
	var out []string
	for _, pl := range svc.Build.Platforms {
		if !isHostPlatform(pl) {
			out = append(out, fmt.Sprintf("build.platforms: %q is not supported: the builder runs the host's architecture only: use %s or remove platforms:", pl, HostPlatform))
		}
	}
	if svc.Platform != "" && !isHostPlatform(svc.Platform) {
		out = append(out, fmt.Sprintf("platform: %q with build: is not supported: the builder runs the host's architecture only: use %s or remove platform:", svc.Platform, HostPlatform))
	}
	return out
}

func isHostPlatform(p string) bool {
	return p == HostPlatform || (HostPlatform == "linux/arm64" && p == "linux/arm64/v8")
}

// refusedBuildFields names the build: fields the builder cannot honour,
// one message each.
func refusedBuildFields(b *types.BuildConfig) []string {
	var out []string
	add := func(set bool, msg string) {
		if set {
			out = append(out, msg)
		}
	}
	add(len(b.SSH) > 0, "build.ssh: is not supported: the builder forwards no SSH agent or key: remove ssh: and fetch private sources into the context first")
	add(len(b.CacheFrom) > 0, "build.cache_from: is not supported: the builder caches layers in its own store only: remove cache_from:")
	add(len(b.CacheTo) > 0, "build.cache_to: is not supported: the builder caches layers in its own store only: remove cache_to:")
	add(b.Isolation != "", fmt.Sprintf("build.isolation: %q is not supported: the builder isolates RUN steps with chroot only: remove isolation:", b.Isolation))
	add(b.Privileged, "build.privileged: true is not supported: RUN steps get no extra privileges: remove privileged:")
	add(len(b.Entitlements) > 0, fmt.Sprintf("build.entitlements: %q is not supported: the builder grants none: remove entitlements:", []string(b.Entitlements)))
	add(b.ShmSize != 0, "build.shm_size: is not supported: RUN steps get the builder's /dev/shm: remove shm_size:")
	add(len(b.Ulimits) > 0, "build.ulimits: is not supported: RUN steps get the builder's limits: remove ulimits:")
	switch b.Network {
	case "", "default", "host":
	case "none":
		// RUN without a network runs under crun, which sets no hosts.
		add(len(b.ExtraHosts) > 0, "build.extra_hosts: has no effect with network: none (RUN has no network to reach them on): remove one of them")
	default:
		out = append(out, fmt.Sprintf("build.network: %q is not supported: the builder has no compose networks: use default, host or none", b.Network))
	}
	return out
}
