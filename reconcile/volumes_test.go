package reconcile

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/project"
)

func volumeProject(svcs ...types.ServiceConfig) *project.Project {
	p := &types.Project{Name: "p", Services: types.Services{}, Volumes: types.Volumes{
		"data": {Name: "p_data", DriverOpts: types.Options{"size": "8m"}},
		"ext":  {Name: "nowhere", External: true},
	}}
	for _, s := range svcs {
		p.Services[s.Name] = s
	}
	return &project.Project{Project: p}
}

func withVolumes(name string, vs ...types.ServiceVolumeConfig) types.ServiceConfig {
	s := types.ServiceConfig{Name: name}
	s.Volumes = vs
	return s
}

func vol(typ, src, target string, ro bool) types.ServiceVolumeConfig {
	return types.ServiceVolumeConfig{Type: typ, Source: src, Target: target, ReadOnly: ro}
}

func TestVolumesMapping(t *testing.T) {
	dir := t.TempDir()
	svc := withVolumes("web",
		vol(types.VolumeTypeVolume, "data", "/data", true),
		vol(types.VolumeTypeVolume, "", "/anon", false),
		types.ServiceVolumeConfig{Type: types.VolumeTypeTmpfs, Target: "/t", Tmpfs: &types.ServiceVolumeTmpfs{Size: 1 << 20, Mode: 0o1777}},
	)
	svc.Tmpfs = types.StringList{"/run:size=1m,mode=1777"}
	disks, mounts, err := Volumes(context.Background(), volumeProject(svc), svc, dir, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(disks) != 2 || disks[0].Path != filepath.Join(dir, "volumes", "data.img") || !disks[0].ReadOnly ||
		disks[1].Path != filepath.Join(dir, "volumes", "anonymous", "web-1", "1.img") || disks[0].Serial == disks[1].Serial {
		t.Fatalf("disks: %+v", disks)
	}
	for _, d := range disks {
		if len(d.Serial) > 20 {
			t.Errorf("serial %q too long", d.Serial)
		}
	}
	if fi, err := os.Stat(disks[0].Path); err != nil || fi.Size() != 8<<20 {
		t.Errorf("data.img: %v %v", fi, err)
	}
	want := []agent.Mount{
		{Type: agent.MountTmpfs, Target: "/run", Options: "size=1m,mode=1777"},
		{Type: agent.MountDisk, Source: disks[0].Serial, Target: "/data", ReadOnly: true},
		{Type: agent.MountDisk, Source: disks[1].Serial, Target: "/anon"},
		{Type: agent.MountTmpfs, Target: "/t", Options: "size=1048576,mode=1777"},
	}
	if len(mounts) != len(want) {
		t.Fatalf("mounts: %+v", mounts)
	}
	for i := range want {
		if mounts[i] != want[i] {
			t.Errorf("mount %d: %+v, want %+v", i, mounts[i], want[i])
		}
	}

	for _, c := range []struct {
		v    types.ServiceVolumeConfig
		want string
	}{
		{vol(types.VolumeTypeBind, "/src", "/app", false), "bind mounts are not supported yet"},
		{vol(types.VolumeTypeVolume, "ext", "/x", false), `external volume "nowhere"`},
	} {
		s := withVolumes("x", c.v)
		if _, _, err := Volumes(context.Background(), volumeProject(s), s, dir, "x-1"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.v, err, c.want)
		}
	}
}

func TestCheckVolumes(t *testing.T) {
	rw := withVolumes("a", vol(types.VolumeTypeVolume, "data", "/d", false))
	rw2 := withVolumes("b", vol(types.VolumeTypeVolume, "data", "/d", false))
	ro := withVolumes("c", vol(types.VolumeTypeVolume, "data", "/d", true))
	if err := CheckVolumes(volumeProject(rw, ro), nil); err != nil {
		t.Errorf("one writer, one reader: %v", err)
	}
	err := CheckVolumes(volumeProject(rw, rw2, ro), nil)
	if err == nil || !strings.Contains(err.Error(), `"data"`) || !strings.Contains(err.Error(), `"a"`) || !strings.Contains(err.Error(), `"b"`) {
		t.Errorf("two writers: %v", err)
	}
	if err := CheckVolumes(volumeProject(rw), map[string]int{"a": 2}); err == nil || !strings.Contains(err.Error(), "replica") {
		t.Errorf("two replicas writing: %v", err)
	}
}
