package planner_test

import (
	"slices"
	"strings"
	"testing"

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
