package modload_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/vmcompose/vmcompose/vm/initramfs/modload"
)

func TestParse(t *testing.T) {
	got, err := modload.Parse(strings.NewReader("# comment\n/lib/modules/6.1/kernel/a.ko\n\n  /lib/modules/6.1/kernel/virtio-rng.ko  \n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/lib/modules/6.1/kernel/a.ko", "/lib/modules/6.1/kernel/virtio-rng.ko"}
	if !slices.Equal(got, want) {
		t.Errorf("Parse: %q, want %q", got, want)
	}
	if n := modload.Name(got[1]); n != "virtio_rng" {
		t.Errorf("Name: %s", n)
	}
	if _, err := modload.Parse(strings.NewReader("kernel/a.ko\n")); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
		t.Errorf("Parse of a relative path: %v", err)
	}
	if mods, err := modload.Read("/nonexistent/manifest"); err != nil || mods != nil {
		t.Errorf("Read of a missing manifest: %v, %v", mods, err)
	}
}
