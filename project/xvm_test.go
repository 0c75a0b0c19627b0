package project_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmcompose/vmcompose/project"
)

func TestVMSizing(t *testing.T) {
	dir := tree(t, map[string]string{"compose.yaml": `
services:
  plain: {image: x}
  limits: {image: x, deploy: {resources: {limits: {cpus: "1.5", memory: 1g}}}}
  legacy: {image: x, cpus: 3, mem_limit: 512m}
  xvm:
    image: x
    deploy: {resources: {limits: {cpus: "4", memory: 2g}}}
    x-vm: {vcpus: 2, memory: 768m, disk: 4g, kernel_args: "quiet loglevel=3", backend: qemu, host_loopback: true, translation_cache: 512m}
  bytes: {image: x, x-vm: {memory: 134217728, disk: 1073741824, kernel_args: [a, b]}}
`})
	p := mustLoad(t, project.Options{WorkingDir: dir})
	for name, want := range map[string]project.VM{
		"plain":  {VCPUs: 1, Memory: 256 << 20, Disk: 1 << 30},
		"limits": {VCPUs: 2, Memory: 1 << 30, Disk: 1 << 30},
		"legacy": {VCPUs: 3, Memory: 512 << 20, Disk: 1 << 30},
		"xvm":    {VCPUs: 2, Memory: 768 << 20, Disk: 4 << 30, KernelArgs: []string{"quiet", "loglevel=3"}, Backend: "qemu", HostLoopback: true, TranslationCache: 512 << 20},
		"bytes":  {VCPUs: 1, Memory: 128 << 20, Disk: 1 << 30, KernelArgs: []string{"a", "b"}},
	} {
		got := p.VMs[name]
		if got.VCPUs != want.VCPUs || got.Memory != want.Memory || got.Disk != want.Disk || got.Backend != want.Backend || got.HostLoopback != want.HostLoopback || got.TranslationCache != want.TranslationCache ||
			strings.Join(got.KernelArgs, " ") != strings.Join(want.KernelArgs, " ") {
			t.Errorf("%s: %+v, want %+v", name, got, want)
		}
	}
}

func TestVMErrorsNameFileServiceAndField(t *testing.T) {
	for _, tc := range []struct{ xvm, want string }{
		{`{vcpus: two}`, `service "web": x-vm.vcpus: got string, want integer`},
		{`{vcpus: 0}`, `service "web": x-vm.vcpus: minimum: got 0, want 1`},
		{`{cpus: 2}`, `service "web": x-vm: additional properties 'cpus' not allowed`},
		{`{memory: lots}`, `service "web": x-vm.memory: "lots" is not a size`},
		{`{memory: 1m}`, `service "web": memory: 1MiB is too little for a VM`},
		{`{backend: docker}`, `service "web": x-vm.backend: value must be one of 'qemu', 'cloud-hypervisor', 'vz'`},
		{`{kernel_args: 3}`, `service "web": x-vm.kernel_args`},
		{`{translation_cache: big}`, `service "web": x-vm.translation_cache: "big" is not a size`},
		{`{host_loopback: "yes"}`, `service "web": x-vm.host_loopback: got string, want boolean`},
	} {
		dir := tree(t, map[string]string{"compose.yaml": "services: {web: {image: x, x-vm: " + tc.xvm + "}}"})
		_, err := project.Load(context.Background(), project.Options{WorkingDir: dir, Env: []string{}})
		if err == nil {
			t.Errorf("x-vm %s loaded", tc.xvm)
			continue
		}
		if !strings.Contains(err.Error(), filepath.Join(dir, "compose.yaml")) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("x-vm %s:\n got %v\nwant the file and %q", tc.xvm, err, tc.want)
		}
	}
}

func TestComposeErrorsNameTheFile(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{"services: {web: {imag: x}}", `services.web: unknown field "imag"`},
		{"services: {web: {image: x, ports: [\"eighty\"]}}", "eighty"},
		{"services: {web: {image: x, networks: [nope]}}", `service "web" refers to undefined network nope`},
		{"services: {web: {image: x, depends_on: [db]}}", `service "web" depends on undefined service "db"`},
		{"services:\n  web: {image: x\n", "compose.yaml"},
	} {
		dir := tree(t, map[string]string{"compose.yaml": tc.yaml})
		_, err := project.Load(context.Background(), project.Options{WorkingDir: dir, Env: []string{}})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "compose.yaml") {
			t.Errorf("%s:\n got %v\nwant the file and %q", tc.yaml, err, tc.want)
		}
	}
}
