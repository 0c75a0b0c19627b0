package reconcile_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/reconcile"
)

func service(t *testing.T, yaml string) types.ServiceConfig {
	t.Helper()
	p, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  "/demo",
		ConfigFiles: []types.ConfigFile{{Filename: "compose.yaml", Content: []byte(yaml)}},
		Environment: types.Mapping{"FROM_HOST": "h"},
	}, func(o *loader.Options) { o.SetProjectName("demo", true) })
	if err != nil {
		t.Fatal(err)
	}
	return p.Services["web"]
}

func TestGuestSpec(t *testing.T) {
	svc := service(t, `
services:
  web:
    image: busybox
    entrypoint: ["/bin/sh", "-c"]
    command: "echo hi"
    environment: {A: "1", FROM_HOST: null, UNSET: null}
    user: "1000:1000"
    group_add: [wheel, "77"]
    shm_size: 8m
    working_dir: /srv
    hostname: webhost
    domainname: example.test
    dns: [10.0.0.1]
    dns_search: [example.test]
    extra_hosts: ["db.local=10.0.0.5"]
    sysctls: {net.ipv4.ip_forward: "1"}
    ulimits: {nofile: {soft: 1024, hard: 2048}, nproc: 64}
    init: true
    stop_signal: SIGINT
    stop_grace_period: 3s
`)
	img := &v1.ConfigFile{Config: v1.Config{Entrypoint: []string{"/entry"}, Cmd: []string{"serve"}, Env: []string{"PATH=/bin"}, User: "app", WorkingDir: "/app", StopSignal: "SIGQUIT"}}
	got := reconcile.GuestSpec(svc, img, "web-1")
	grace := 3 * time.Second
	yes := true
	want := agent.Spec{
		Image:      agent.ImageConfig{Entrypoint: []string{"/entry"}, Cmd: []string{"serve"}, Env: []string{"PATH=/bin"}, User: "app", WorkingDir: "/app", StopSignal: "SIGQUIT"},
		Entrypoint: []string{"/bin/sh", "-c"},
		Command:    []string{"echo", "hi"},
		Env:        []string{"A=1", "FROM_HOST=h", "UNSET"},
		User:       "1000:1000", GroupAdd: []string{"wheel", "77"}, ShmSize: 8 << 20, WorkingDir: "/srv",
		Hostname: "webhost", Domainname: "example.test",
		Hosts: []agent.HostEntry{{IP: "10.0.0.5", Names: []string{"db.local"}}},
		DNS:   []string{"10.0.0.1"}, DNSSearch: []string{"example.test"},
		Sysctls: map[string]string{"net.ipv4.ip_forward": "1"},
		Ulimits: []agent.Ulimit{{Name: "nofile", Soft: 1024, Hard: 2048}, {Name: "nproc", Soft: 64, Hard: 64}},
		Init:    &yes, StopSignal: "SIGINT", StopGracePeriod: &grace,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("spec:\n%+v\nwant:\n%+v", got, want)
	}

	plain := reconcile.GuestSpec(service(t, "services: {web: {image: busybox}}"), img, "web-1")
	if plain.Entrypoint != nil || plain.Command != nil || plain.Hostname != "web-1" {
		t.Errorf("an unset entrypoint/command must stay nil and the hostname default to the instance: %+v", plain)
	}
	if err := reconcile.Override(&plain, []string{"B=2"}, `sh -c "exit 3"`, nil); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(plain.Entrypoint, []string{"sh", "-c", "exit 3"}) || plain.Command == nil || len(plain.Command) != 0 || plain.Env[len(plain.Env)-1] != "B=2" {
		t.Errorf("override: %+v", plain)
	}
}
