package planner_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/planner"
)

func fieldsOf(t *testing.T, yaml, service, digest string) planner.Fields {
	t.Helper()
	p := load(t, yaml)
	f, err := planner.ServiceFields(p.Services[service], digest)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestHashIgnoresWhatNeedsNoNewVM(t *testing.T) {
	base := fieldsOf(t, `services: {web: {image: nginx, depends_on: [db]}, db: {image: pg}}`, "web", "")
	for _, yaml := range []string{
		`services: {web: {image: nginx, deploy: {replicas: 3}}}`,
		`services: {web: {image: nginx, scale: 2}}`,
		`services: {web: {image: nginx, labels: {a: b}, restart: always, pull_policy: always}}`,
		`services: {web: {image: nginx, x-other: 1, build: .}}`,
	} {
		if got := fieldsOf(t, yaml, "web", ""); got.Hash() != base.Hash() {
			t.Errorf("%s: hash changed; fields changed: %v", yaml, got.Changed(base))
		}
	}
}

func TestHashNamesWhatChanged(t *testing.T) {
	base := `services: {web: {image: nginx, command: [a], environment: {A: "1"}, ports: ["80:80"], x-vm: {vcpus: 1}}}`
	old := fieldsOf(t, base, "web", "")
	for _, tc := range []struct{ yaml, digest, want string }{
		{strings.Replace(base, "nginx", "nginx:2", 1), "", "image"},
		{base, "sha256:abc", "image_digest"},
		{strings.Replace(base, "[a]", "[b]", 1), "", "command"},
		{strings.Replace(base, `"1"`, `"2"`, 1), "", "environment"},
		{strings.Replace(base, `80:80`, `81:80`, 1), "", "ports"},
		{strings.Replace(base, `vcpus: 1`, `vcpus: 2`, 1), "", "x-vm"},
		{strings.Replace(base, `, x-vm: {vcpus: 1}`, ``, 1), "", "x-vm"},
		{strings.Replace(base, `x-vm: {vcpus: 1}}}`, `x-vm: {vcpus: 1}, volumes: ["data:/data"]}}
volumes: {data: {}}`, 1), "", "volumes"},
	} {
		f := fieldsOf(t, tc.yaml, "web", tc.digest)
		if f.Hash() == old.Hash() {
			t.Errorf("%s: hash unchanged", tc.yaml)
		}
		if got := f.Changed(old); !slices.Equal(got, []string{tc.want}) {
			t.Errorf("%s: changed %v, want [%s]", tc.yaml, got, tc.want)
		}
	}
}

func TestHashIsStable(t *testing.T) {
	yaml := `services: {web: {image: nginx, environment: {B: "2", A: "1", C: "3", D: "4"}, ports: ["80:80", "443:443"]}}`
	want := fieldsOf(t, yaml, "web", "").Hash()
	for range 20 {
		if got := fieldsOf(t, yaml, "web", "").Hash(); got != want {
			t.Fatalf("hash %s then %s", want, got)
		}
	}
}

// TestHashCoversContents: a secret's or config's content is in the
// fields through its digest, so a changed content recreates the service
// and the plan names it, by name only; a ref whose digest is unknown adds
// nothing, and the other services stay.
func TestHashCoversContents(t *testing.T) {
	yaml := `
services:
  web: {image: nginx, secrets: [pw], configs: [conf], environment: {A: "1"}}
  other: {image: nginx}
secrets:
  pw: {file: ./pw.txt}
configs:
  conf: {content: "x=1"}
`
	p := load(t, yaml)
	digests := map[string]string{"secrets:pw": "d1", "configs:conf": "c1"}
	fields := func(p *types.Project, name string, d map[string]string) planner.Fields {
		f, err := planner.InstanceFields(p.Services[name], "", d, nil)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	base := fields(p, "web", digests)
	if base["secrets:pw"] != "d1" || base["configs:conf"] != "c1" {
		t.Fatalf("fields %v lack the contents' digests", base)
	}
	if f := fields(p, "web", map[string]string{"configs:conf": "c1"}); f["secrets:pw"] != "" || f.Hash() == base.Hash() {
		t.Errorf("without the secret's digest: %v", f)
	}
	observed := planner.Observed{}
	for _, name := range []string{"web", "other"} {
		f := fields(p, name, digests)
		observed.Instances = append(observed.Instances, planner.Instance{Service: name, Number: 1, State: planner.Running, Hash: f.Hash(), Fields: f})
	}
	for _, tc := range []struct {
		yaml     string
		contents map[string]string
		want     string
	}{
		{yaml, digests, "nothing web-1 up to date"},
		{yaml, map[string]string{"secrets:pw": "d2", "configs:conf": "c1"}, `recreate web-1 secrets: "pw" changed`},
		{yaml, map[string]string{"secrets:pw": "d2", "configs:conf": "c2"}, `recreate web-1 configs: "conf" changed; secrets: "pw" changed`},
		{strings.Replace(yaml, `"1"`, `"2"`, 1), map[string]string{"secrets:pw": "d2", "configs:conf": "c1"}, `recreate web-1 changed: environment; secrets: "pw" changed`},
	} {
		plan, err := planner.Up(planner.Desired{Project: load(t, tc.yaml), Contents: tc.contents}, observed, planner.Options{})
		if err != nil {
			t.Fatal(err)
		}
		s := plan.String()
		var lines []string // the operations, their columns one space apart
		for _, l := range strings.Split(s, "\n") {
			lines = append(lines, strings.Join(strings.Fields(l), " "))
		}
		if !slices.Contains(lines, "1 nothing other-1 up to date") || !slices.Contains(lines, "2 "+tc.want) {
			t.Errorf("contents %v: plan\n%swant a line %q", tc.contents, s, tc.want)
		}
	}
}
