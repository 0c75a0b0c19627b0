package build

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/project"
)

// TestWriteCompose: the builder project's compose file loads as any
// project does, with the builder's size, its cache volume and the
// project's build secrets; writing it again with nothing changed leaves
// the file alone (an up of it then does nothing).
func TestWriteCompose(t *testing.T) {
	dir := t.TempDir()
	token := filepath.Join(dir, "token.txt")
	if err := os.WriteFile(token, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Build and Image are promoted fields: a literal cannot set them.
	app, db := types.ServiceConfig{Name: "app"}, types.ServiceConfig{Name: "db"}
	app.Build = &types.BuildConfig{Context: dir, Secrets: []types.ServiceSecretConfig{{Source: "token"}}}
	db.Image = "postgres"
	b := &Builder{Dir: filepath.Join(dir, "state", ProjectName("shop")), Project: &types.Project{
		Name:     "shop",
		Services: types.Services{"app": app, "db": db},
		Secrets:  types.Secrets{"token": {File: token}, "unused": {File: token}},
	}}
	if err := os.MkdirAll(b.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	file, err := b.writeCompose("vmcompose.local/builder:x")
	if err != nil {
		t.Fatal(err)
	}
	p, err := project.Load(context.Background(), project.Options{Files: []string{file}})
	if err != nil {
		t.Fatalf("the builder's compose file does not load: %v", err)
	}
	vm := p.VMs[builderService]
	if p.Name != "shop-builder" || vm.VCPUs != builderVCPUs || vm.Memory != 2<<30 || vm.TranslationCache != 1<<30 {
		t.Errorf("builder project %s, VM %+v", p.Name, vm)
	}
	svc := p.Services[builderService]
	if len(svc.Secrets) != 1 || svc.Secrets[0].Source != "token" || p.Secrets["token"].File != token {
		t.Errorf("secrets: %+v of %+v, want the build secret alone", svc.Secrets, p.Secrets)
	}
	if len(svc.Volumes) != 1 || svc.Volumes[0].Target != guestRoot || p.Volumes["cache"].Name != CacheVolume("shop") {
		t.Errorf("volumes: %+v, %+v", svc.Volumes, p.Volumes)
	}
	before, _ := os.Stat(file)
	if _, err := b.writeCompose("vmcompose.local/builder:x"); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.Stat(file); !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("an unchanged compose file was written again")
	}
}
