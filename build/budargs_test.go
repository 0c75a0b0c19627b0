package build

import (
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
)

// TestBudArgs: each build: field reaches buildah as its flag, and
// network: none switches RUN to crun without a network.
func TestBudArgs(t *testing.T) {
	one := "1"
	svc := types.ServiceConfig{Name: "app"}
	svc.Build = &types.BuildConfig{
		Context: "/p", Target: "final", NoCache: true,
		Labels:     types.Labels{"b": "2", "a": "1"},
		Secrets:    []types.ServiceSecretConfig{{Source: "token"}, {Source: "key", Target: "ssh_key"}},
		ExtraHosts: types.HostsList{"db": []string{"10.0.0.2"}},
	}
	j := &job{Spec: Spec{Service: svc}, args: map[string]string{"Z": "z", "A": one}, ref: "index.docker.io/library/p-app:latest",
		contexts: []buildContext{{key: "app"}, {name: "extra", key: "app@extra"}}, ignoreFile: "/p/.dockerignore"}
	got := strings.Join(budArgs(j), " ")
	want := "bud --layers --pull=never --isolation chroot -f " + guestDir + "/df/app/Dockerfile -t index.docker.io/library/p-app:latest" +
		" --ignorefile " + guestDir + "/df/app/.dockerignore --target final --no-cache --build-arg A=1 --build-arg Z=z" +
		" --label a=1 --label b=2 --secret id=token,src=/run/secrets/token --secret id=ssh_key,src=/run/secrets/key" +
		" --add-host db:10.0.0.2 --build-context extra=" + guestDir + "/ctx/app@extra " + guestDir + "/ctx/app"
	if got != want {
		t.Errorf("bud arguments:\n%s\nwant:\n%s", got, want)
	}
	svc.Build = &types.BuildConfig{Context: "/p", Network: "none"}
	j = &job{Spec: Spec{Service: svc}, ref: "r", contexts: []buildContext{{key: "app"}}}
	if got := strings.Join(budArgs(j), " "); !strings.Contains(got, "--isolation oci ") || !strings.Contains(got, "--network none") || !strings.Contains(got, "--ignorefile /dev/null") {
		t.Errorf("network: none: %s", got)
	}
}
