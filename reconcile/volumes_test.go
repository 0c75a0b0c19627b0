package reconcile

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/vm"
)

func volumeProject(svcs ...types.ServiceConfig) *project.Project {
	p := &types.Project{Name: "p", Services: types.Services{}, Volumes: types.Volumes{
		"data": {Name: "p_data", DriverOpts: types.Options{"size": "8m"}},
		"ext":  {Name: "nowhere", External: true},
		"opts": {Name: "p_opts", DriverOpts: types.Options{"type": "nfs"}},
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

// stateDirs points StateDir (and so the volume store) at a new
// directory, and returns the state dir of project p.
func stateDirs(t *testing.T) string {
	t.Helper()
	t.Setenv("XDG_STATE_HOME", t.TempDir())
	dir, err := StateDir("p")
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestVolumesMapping(t *testing.T) {
	dir := stateDirs(t)
	store, _ := VolumeStoreDir()
	svc := withVolumes("web",
		vol(types.VolumeTypeVolume, "data", "/data", true),
		vol(types.VolumeTypeVolume, "", "/anon", false),
		types.ServiceVolumeConfig{Type: types.VolumeTypeTmpfs, Target: "/t", Tmpfs: &types.ServiceVolumeTmpfs{Size: 1 << 20, Mode: 0o1777}},
	)
	svc.Tmpfs = types.StringList{"/run:size=1m,mode=1777"}
	st, err := Volumes(context.Background(), volumeProject(svc), svc, dir, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	disks, mounts := st.Disks, st.Mounts
	if len(disks) != 2 || disks[0].Path != filepath.Join(store, "p_data", "disk.img") || !disks[0].ReadOnly ||
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
		{Type: agent.MountDisk, Source: disks[0].Serial, Target: "/data", ReadOnly: true, Subpath: vm.VolumeData},
		{Type: agent.MountDisk, Source: disks[1].Serial, Target: "/anon", Subpath: vm.VolumeData},
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

	// A volume made by an earlier version, in the project's state dir,
	// is moved into the store, once, the user told; its data is at its
	// root: the guest mounts that.
	os.RemoveAll(filepath.Join(store, "p_data"))
	if err := vm.CreateScratch(context.Background(), filepath.Join(VolumeDir(dir), "data.img"), 8<<20); err != nil {
		t.Fatal(err)
	}
	ro := withVolumes("ro", vol(types.VolumeTypeVolume, "data", "/data", true))
	st, err = Volumes(context.Background(), volumeProject(ro), ro, dir, "ro-1")
	if err != nil || len(st.Mounts) != 1 || st.Mounts[0].Subpath != "" || st.Disks[0].Path != filepath.Join(store, "p_data", "disk.img") {
		t.Errorf("a volume with its data at its root: %+v, %v; want its root mounted", st, err)
	}
	if len(st.Notices) != 1 || !strings.Contains(st.Notices[0], "Moved volume p_data from "+filepath.Join(VolumeDir(dir), "data.img")) {
		t.Errorf("notices of the move: %q", st.Notices)
	}
	if real, err := filepath.EvalSymlinks(filepath.Join(VolumeDir(dir), "data.img")); err != nil || real != st.Disks[0].Path {
		t.Errorf("the old path does not lead to the moved image: %s %v", real, err)
	}
	if st, err := Volumes(context.Background(), volumeProject(ro), ro, dir, "ro-1"); err != nil || len(st.Notices) != 0 {
		t.Errorf("the second use: %q, %v", st.Notices, err)
	}

	for _, c := range []struct {
		v    types.ServiceVolumeConfig
		want string
	}{
		{vol(types.VolumeTypeVolume, "ext", "/x", false), "volume \"ext\": external volume \"nowhere\" does not exist: create it with `vmcompose volume create nowhere`"},
		{vol(types.VolumeTypeVolume, "opts", "/x", false), `volume "opts": driver_opts.type is not supported: the options are size and sharing`},
	} {
		s := withVolumes("x", c.v)
		if _, err := Volumes(context.Background(), volumeProject(s), s, dir, "x-1"); err == nil || err.Error() != c.want {
			t.Errorf("%+v: %v, want %q", c.v, err, c.want)
		}
	}
}

// TestStoreVolumes: volumes are global by name: two projects naming one
// volume (name:) share it, an external volume is the store's, also when
// it was an image of an earlier version; down -v (RemoveProjectVolumes)
// removes the project's own volumes and no other.
func TestStoreVolumes(t *testing.T) {
	dir := stateDirs(t)
	ctx := context.Background()
	s, err := OpenVolumes()
	if err != nil {
		t.Fatal(err)
	}
	two := func(name string) *project.Project {
		p := volumeProject()
		p.Name = name
		p.Volumes["common"] = types.VolumeConfig{Name: "common"}
		p.Volumes["data"] = types.VolumeConfig{Name: name + "_data"}
		p.Volumes["ext"] = types.VolumeConfig{Name: "byhand", External: true}
		return p
	}
	svc := withVolumes("web", vol(types.VolumeTypeVolume, "common", "/c", false), vol(types.VolumeTypeVolume, "data", "/d", false))
	a, b := two("a"), two("b")
	stA, err := Volumes(ctx, a, svc, dir, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	stB, err := Volumes(ctx, b, svc, dir, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	if stA.Disks[0].Path != stB.Disks[0].Path || stA.Disks[1].Path == stB.Disks[1].Path {
		t.Errorf("a's disks %+v, b's %+v: want common shared, data not", stA.Disks, stB.Disks)
	}
	if v, err := s.Get("common"); err != nil || v.Labels[LabelProject] != "a" || v.Labels[LabelVolume] != "common" {
		t.Errorf("common: %+v, %v; want a's labels", v, err)
	}

	// An external volume: an image of an earlier version in the store's
	// directory, then the store's own.
	ext := withVolumes("x", vol(types.VolumeTypeVolume, "ext", "/x", false))
	if err := vm.CreateVolume(ctx, filepath.Join(s.Dir(), "byhand.img"), 8<<20); err != nil {
		t.Fatal(err)
	}
	st, err := Volumes(ctx, a, ext, dir, "x-1")
	if err != nil || st.Disks[0].Path != filepath.Join(s.Dir(), "byhand", "disk.img") || len(st.Notices) != 1 {
		t.Fatalf("an external volume of an earlier version: %+v, %v", st, err)
	}
	if v, err := s.Get("byhand"); err != nil || v.Labels[LabelProject] != "" {
		t.Errorf("an external volume got a project's labels: %+v, %v", v, err)
	}

	lines, err := RemoveProjectVolumes(b, dir)
	if err != nil || !slices.Equal(lines, []string{"Volume b_data Removed"}) {
		t.Errorf("down -v of b: %q, %v", lines, err)
	}
	lines, err = RemoveProjectVolumes(a, dir)
	if err != nil || !slices.Equal(lines, []string{"Volume a_data Removed", "Volume common Removed"}) {
		t.Errorf("down -v of a: %q, %v", lines, err)
	}
	left, _ := s.List()
	if len(left) != 1 || left[0].Name != "byhand" {
		t.Errorf("left after down -v of both: %+v", left)
	}
}

func TestBindMounts(t *testing.T) {
	dir := stateDirs(t)
	src := filepath.Join(dir, "src")
	file := filepath.Join(dir, "conf", "app.yaml")
	os.MkdirAll(filepath.Dir(file), 0o755)
	if err := os.WriteFile(file, []byte("x: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	short := vol(types.VolumeTypeBind, src, "/src", false) // ./src:/src
	short.Bind = &types.ServiceVolumeBind{CreateHostPath: true}
	long := vol(types.VolumeTypeBind, filepath.Join(dir, "long"), "/long", true) // no bind: section
	svc := withVolumes("web", short, long, vol(types.VolumeTypeBind, file, "/etc/app.yaml", true))
	st, err := Volumes(context.Background(), volumeProject(svc), svc, dir, "web-1")
	if err != nil {
		t.Fatal(err)
	}
	// Missing sources are made as directories, as docker compose does.
	for _, d := range []string{src, filepath.Join(dir, "long")} {
		if fi, err := os.Stat(d); err != nil || !fi.IsDir() {
			t.Errorf("bind source %s: %v, %v; want a directory created", d, fi, err)
		}
	}
	wantShares := []vm.Share{
		{Tag: "bind0", Source: src},
		{Tag: "bind1", Source: filepath.Join(dir, "long"), ReadOnly: true},
		{Tag: "bind2", Source: file, ReadOnly: true},
	}
	if !slices.Equal(st.Shares, wantShares) {
		t.Errorf("shares: %+v\nwant %+v", st.Shares, wantShares)
	}
	wantMounts := []agent.Mount{
		{Type: agent.MountVirtiofs, Source: "bind0", Target: "/src"},
		{Type: agent.MountVirtiofs, Source: "bind1", Target: "/long", ReadOnly: true},
		// A file is shared alone and bound at its target in the guest.
		{Type: agent.MountVirtiofs, Source: "bind2", Target: "/etc/app.yaml", ReadOnly: true, Subpath: "app.yaml"},
	}
	if !slices.Equal(st.Mounts, wantMounts) {
		t.Errorf("mounts: %+v\nwant %+v", st.Mounts, wantMounts)
	}
	if len(st.Disks) != 0 {
		t.Errorf("disks for bind mounts: %+v", st.Disks)
	}
	spec := vm.Spec{Name: "web-1", Kernel: "/k", Shares: st.Shares}
	if err := spec.Validate(); err != nil {
		t.Errorf("the shares make an invalid VM spec: %v", err)
	}

	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	noCreate := vol(types.VolumeTypeBind, filepath.Join(dir, "absent"), "/a", false)
	noCreate.Bind = &types.ServiceVolumeBind{CreateHostPath: false}
	for _, c := range []struct {
		v    types.ServiceVolumeConfig
		want string
	}{
		{noCreate, "volumes: bind mount of " + filepath.Join(dir, "absent") + " at /a: the source does not exist, and bind.create_host_path is false: create it"},
		{vol(types.VolumeTypeBind, sock, "/run/s.sock", false), "the source is a unix socket, which a VM cannot reach"},
		{vol(types.VolumeTypeBind, "rel", "/r", false), "not an absolute path"},
	} {
		s := withVolumes("x", c.v)
		if _, err := Volumes(context.Background(), volumeProject(s), s, dir, "x-1"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.v, err, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "absent")); err == nil {
		t.Error("create_host_path: false created the source")
	}
}

func TestBindWarnings(t *testing.T) {
	v := vol(types.VolumeTypeBind, "/src", "/src", false)
	v.Bind = &types.ServiceVolumeBind{Propagation: "rshared", SELinux: "z", CreateHostPath: true}
	got := VolumeWarnings(volumeProject(withVolumes("web", v, vol(types.VolumeTypeBind, "/b", "/b", false))))
	want := []string{
		`service "web": volumes: bind mount at /src: bind.propagation "rshared" is ignored: a VM's mounts are its own`,
		`service "web": volumes: bind mount at /src: bind.selinux "z" is ignored: the source is not relabelled`,
	}
	if !slices.Equal(got, want) {
		t.Errorf("VolumeWarnings = %q\nwant %q", got, want)
	}
}

// TestExplainStart: a VM that QEMU could not start because another holds
// a volume's disk gets an error naming the volume; other errors stay.
func TestExplainStart(t *testing.T) {
	stateDirs(t)
	store, _ := VolumeStoreDir()
	r := &Runtime{}
	err := fmt.Errorf("starting VM web-1: %w", &vm.DiskInUseError{Path: filepath.Join(store, "p_data", "disk.img")})
	if got := r.ExplainStart(context.Background(), err); !strings.HasPrefix(got.Error(), "volume p_data is in use by another VM: ") {
		t.Errorf("ExplainStart: %v", got)
	}
	for _, e := range []error{errors.New("qemu exited"), &vm.DiskInUseError{Path: "/elsewhere/disk.img"}} {
		if got := r.ExplainStart(context.Background(), e); got != e {
			t.Errorf("ExplainStart(%v) = %v", e, got)
		}
	}
}
