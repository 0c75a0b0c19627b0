package reconcile

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/vm"
)

// TestShareVolume: a volume with a disk image becomes a directory with
// its data, marked seeded, and the image goes; a new one is an empty
// data directory; what a crash leaves (a half-made directory aside, an
// image beside a complete directory) is cleaned up, not used; Volumes
// then serves the directory as a share with host locks, its :ro users
// read-only.
func TestShareVolume(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("keeping owners needs root")
	}
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skipf("e2fsprogs: %v", err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	img := volumeImagePath(dir, "data")
	os.MkdirAll(VolumeDir(dir), 0o700)
	if err := vm.CreateVolume(ctx, img, 8<<20); err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(t.TempDir(), "f")
	os.WriteFile(src, []byte("kept\n"), 0o644)
	if out, err := exec.Command("debugfs", "-w", "-R", "write "+src+" /data/f", img).CombinedOutput(); err != nil {
		t.Fatalf("debugfs write: %v\n%s", err, out)
	}
	// A move that crashed before its rename.
	os.MkdirAll(filepath.Join(VolumeDir(dir), ".data.shared.new-123", agent.ShareData), 0o755)

	moved, err := ShareVolume(ctx, dir, "data")
	if err != nil || !moved {
		t.Fatalf("ShareVolume: moved %v, %v", moved, err)
	}
	root := SharedVolumeDir(dir, "data")
	if b, err := os.ReadFile(filepath.Join(root, agent.ShareData, "f")); err != nil || string(b) != "kept\n" {
		t.Errorf("moved data: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(root, agent.ShareMeta, agent.ShareSeeded)); err != nil {
		t.Errorf("a moved volume is not marked seeded: %v", err)
	}
	ents, _ := os.ReadDir(VolumeDir(dir))
	if len(ents) != 1 || ents[0].Name() != "data.shared" {
		t.Errorf("volume dir after the move: %v, want data.shared alone", ents)
	}

	// An image left beside a complete directory (a crash after the
	// rename) is removed; the directory is kept.
	os.WriteFile(img, []byte("stale"), 0o600)
	if moved, err := ShareVolume(ctx, dir, "data"); err != nil || moved {
		t.Errorf("ShareVolume of a shared volume: moved %v, %v", moved, err)
	}
	if _, err := os.Stat(img); !os.IsNotExist(err) {
		t.Errorf("the stale image stayed: %v", err)
	}

	if moved, err := ShareVolume(ctx, dir, "fresh"); err != nil || moved {
		t.Fatalf("ShareVolume of a new volume: moved %v, %v", moved, err)
	}
	if ents, err := os.ReadDir(filepath.Join(SharedVolumeDir(dir, "fresh"), agent.ShareData)); err != nil || len(ents) != 0 {
		t.Errorf("a new shared volume: %v, %v; want an empty data directory", ents, err)
	}
	if _, err := os.Stat(filepath.Join(SharedVolumeDir(dir, "fresh"), agent.ShareMeta, agent.ShareSeeded)); !os.IsNotExist(err) {
		t.Errorf("a new shared volume is marked seeded: %v", err)
	}
	if got := SharedVolumes(dir); !reflect.DeepEqual(got, map[string]bool{"data": true, "fresh": true}) {
		t.Errorf("SharedVolumes = %v", got)
	}

	p := volumeProject(withVolumes("app",
		vol(types.VolumeTypeVolume, "data", "/d", false),
		vol(types.VolumeTypeVolume, "data", "/r", true)))
	st, err := Volumes(ctx, p, p.Services["app"], dir, "app-1")
	if err != nil {
		t.Fatal(err)
	}
	wantShares := []vm.Share{{Tag: "vol0", Source: root, Locks: true}, {Tag: "vol1", Source: root, ReadOnly: true, Locks: true}}
	wantMounts := []agent.Mount{{Type: agent.MountVolumeShare, Source: "vol0", Target: "/d"}, {Type: agent.MountVolumeShare, Source: "vol1", Target: "/r", ReadOnly: true}}
	if len(st.Disks) != 0 || !reflect.DeepEqual(st.Shares, wantShares) || !reflect.DeepEqual(st.Mounts, wantMounts) {
		t.Errorf("Volumes of a shared volume:\ndisks %+v\nshares %+v\nmounts %+v", st.Disks, st.Shares, st.Mounts)
	}
}
