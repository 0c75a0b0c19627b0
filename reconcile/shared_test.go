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
	"github.com/vmcompose/vmcompose/volume"
)

// TestShareVolume: a project's disk volume becomes a shared volume of the
// store with its data, marked seeded; a new one is made shared and empty,
// not marked; an image of an earlier version is moved in first. Volumes
// then serves
// the shared directory to the VM as shares with host locks, the :ro one
// read-only.
func TestShareVolume(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("keeping owners needs root")
	}
	if _, err := exec.LookPath("debugfs"); err != nil {
		t.Skipf("e2fsprogs: %v", err)
	}
	ctx := context.Background()
	dir := stateDirs(t)
	p := volumeProject()
	p.Volumes["old"] = types.VolumeConfig{Name: "p_old"}
	p.Volumes["fresh"] = types.VolumeConfig{Name: "p_fresh"}
	s, err := OpenVolumes()
	if err != nil {
		t.Fatal(err)
	}
	write := func(img string) {
		t.Helper()
		src := filepath.Join(t.TempDir(), "f")
		os.WriteFile(src, []byte("kept\n"), 0o644)
		if out, err := exec.Command("debugfs", "-w", "-R", "write "+src+" /data/f", img).CombinedOutput(); err != nil {
			t.Fatalf("debugfs write: %v\n%s", err, out)
		}
	}
	v, _, err := storeVolume(ctx, p, "data", dir)
	if err != nil || v.Kind != volume.Disk {
		t.Fatalf("storeVolume: %+v, %v", v, err)
	}
	write(v.Mountpoint())
	// An earlier version's image, not in the store yet.
	os.MkdirAll(VolumeDir(dir), 0o700)
	if err := vm.CreateVolume(ctx, filepath.Join(VolumeDir(dir), "old.img"), 8<<20); err != nil {
		t.Fatal(err)
	}
	write(filepath.Join(VolumeDir(dir), "old.img"))

	drivers := func(string) (vm.Driver, error) { return nil, nil }
	for key, want := range map[string]bool{"data": true, "old": true, "fresh": false} {
		moved, err := ShareVolume(ctx, p, key, dir, drivers)
		if err != nil || moved != want {
			t.Fatalf("ShareVolume %s: moved %v, %v; want moved %v", key, moved, err, want)
		}
		v, err := s.Get(VolumeName(p, key))
		if err != nil || v.Kind != volume.Shared {
			t.Fatalf("%s after ShareVolume: %+v, %v", key, v, err)
		}
		b, _ := os.ReadFile(filepath.Join(v.Mountpoint(), agent.ShareData, "f"))
		_, seeded := os.Stat(filepath.Join(v.Mountpoint(), agent.ShareMeta, agent.ShareSeeded))
		if want && (string(b) != "kept\n" || seeded != nil) || !want && (len(b) != 0 || seeded == nil) {
			t.Errorf("%s: data %q, seeded mark: %v", key, b, seeded)
		}
		if moved, err := ShareVolume(ctx, p, key, dir, drivers); err != nil || moved {
			t.Errorf("ShareVolume %s again: moved %v, %v", key, moved, err)
		}
	}
	if got := SharedVolumes(p); !reflect.DeepEqual(got, map[string]bool{"data": true, "old": true, "fresh": true}) {
		t.Errorf("SharedVolumes = %v", got)
	}

	svc := withVolumes("app", vol(types.VolumeTypeVolume, "data", "/d", false), vol(types.VolumeTypeVolume, "data", "/r", true))
	st, err := Volumes(ctx, p, svc, dir, "app-1")
	if err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(s.Dir(), "p_data", "shared")
	wantShares := []vm.Share{{Tag: "vol0", Source: root, Locks: true}, {Tag: "vol1", Source: root, ReadOnly: true, Locks: true}}
	wantMounts := []agent.Mount{{Type: agent.MountVolumeShare, Source: "vol0", Target: "/d"}, {Type: agent.MountVolumeShare, Source: "vol1", Target: "/r", ReadOnly: true}}
	if len(st.Disks) != 0 || !reflect.DeepEqual(st.Shares, wantShares) || !reflect.DeepEqual(st.Mounts, wantMounts) {
		t.Errorf("Volumes of a shared volume:\ndisks %+v\nshares %+v\nmounts %+v", st.Disks, st.Shares, st.Mounts)
	}
}
