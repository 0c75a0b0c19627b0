package main_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vmcompose/vmcompose/build"
	"github.com/vmcompose/vmcompose/internal/testimage"
)

// TestSetupBuilder: setup --builder makes the builder image once, says so
// on stderr (nothing with --progress quiet) and names it on stdout. A
// stand-in mmdebstrap first on PATH writes a tiny root file system; the
// build package's test runs the real one.
func TestSetupBuilder(t *testing.T) {
	kernel := vmEnv(t)
	bin := t.TempDir()
	rootfs := filepath.Join(bin, "rootfs.tar")
	if err := os.WriteFile(rootfs, testimage.Tar(t, []testimage.Entry{testimage.File("usr/bin/buildah", 0o755, "x")}), 0o644); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nfor a; do target=$a; done\ncp " + rootfs + " \"$target\"\n"
	if err := os.WriteFile(filepath.Join(bin, "mmdebstrap"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	setup := func(home, progress string) (string, string) {
		env := append(kernel, "VMCOMPOSE_HOME="+home, "XDG_STATE_HOME="+filepath.Join(home, "state"),
			"PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), build.ImageEnv+"=")
		stdout, stderr, code := output(t, vmcompose(t.TempDir(), env, "--progress", progress, "setup", "--builder"))
		if code != 0 {
			t.Fatalf("setup --builder: exit %d\n%s", code, stderr)
		}
		if !strings.Contains(stdout, "builder image "+build.ImageRef()+" (sha256:") {
			t.Errorf("stdout does not name the builder image:\n%s", stdout)
		}
		return stdout, stderr
	}
	home := t.TempDir()
	if _, stderr := setup(home, "plain"); !strings.Contains(stderr, build.MakingMessage) {
		t.Errorf("first setup --builder, stderr:\n%s", stderr)
	}
	if _, stderr := setup(home, "plain"); strings.Contains(stderr, build.MakingMessage) {
		t.Errorf("second setup --builder made it again, stderr:\n%s", stderr)
	}
	if _, stderr := setup(t.TempDir(), "quiet"); stderr != "" {
		t.Errorf("setup --builder with --progress quiet printed:\n%s", stderr)
	}
}
