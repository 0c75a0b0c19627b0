package modload_test

import (
	"testing"

	"github.com/vmcompose/vmcompose/vm/initramfs/modload"
)

func TestLoadForDevicesWithoutManifest(t *testing.T) {
	if mods, err := modload.LoadForDevices("/nonexistent/manifest", []string{"virtio:d00000001v00001AF4"}); err != nil || mods != nil {
		t.Errorf("LoadForDevices with a missing manifest: %v, %v", mods, err)
	}
}
