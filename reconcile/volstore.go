package reconcile

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/volume"
)

// The labels docker compose sets on the volumes it creates; down -v
// removes the volumes labelled with the project.
const (
	LabelProject = "com.docker.compose.project"
	LabelVolume  = "com.docker.compose.volume"
	LabelVersion = "com.docker.compose.version"
)

// VolumeStoreDir is the volume store, one for all projects:
// $XDG_STATE_HOME/vmcompose/_volumes (no project name starts with "_").
// Volumes of earlier versions were <project state>/volumes/<key>.img, and
// external ones _volumes/<name>.img: they are moved in on first use.
func VolumeStoreDir() (string, error) { return StateDir("_volumes") }

// OpenVolumes opens the volume store.
func OpenVolumes() (*volume.Store, error) {
	d, err := VolumeStoreDir()
	if err != nil {
		return nil, err
	}
	return volume.Open(d)
}

// VolumeName is the name in the store of the project's volume key:
// its name:, else <project>_<key> (the key for an external volume), as
// compose names it.
func VolumeName(p *project.Project, key string) string {
	if cfg := p.Volumes[key]; cfg.External {
		return cmp.Or(cfg.Name, key)
	}
	return cmp.Or(p.Volumes[key].Name, p.Name+"_"+key)
}

// composeVersion is what the com.docker.compose.version label says made
// a volume: vmcompose's module version.
func composeVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// storeVolume returns the store's volume of the project's volume key,
// creating it when it is the project's and missing, and moving in a disk
// image an earlier version left (<dir>/volumes/<key>.img, or the store's
// <name>.img for external volumes); notice then says so, for the user.
func storeVolume(ctx context.Context, p *project.Project, key, dir string) (v volume.Volume, notice string, err error) {
	cfg := p.Volumes[key]
	opts, err := volume.ParseOptions(cfg.DriverOpts)
	if err != nil {
		return volume.Volume{}, "", fmt.Errorf("volume %q: %w", key, err)
	}
	s, err := OpenVolumes()
	if err != nil {
		return volume.Volume{}, "", err
	}
	name := VolumeName(p, key)
	v, err = s.Get(name)
	if err == nil {
		return v, "", nil
	}
	if !errors.Is(err, volume.ErrNotFound) {
		return volume.Volume{}, "", fmt.Errorf("volume %q: %w", key, err)
	}
	if old := oldImage(s, p, key, dir); old != "" {
		return adopt(s, name, old, volumeLabels(p, key, cfg))
	}
	if cfg.External {
		return volume.Volume{}, "", fmt.Errorf("volume %q: external volume %q does not exist: create it with `vmcompose volume create %s`", key, name, name)
	}
	v, _, err = s.Create(ctx, name, volume.Spec{Kind: opts.Kind(), Size: opts.Size, Labels: volumeLabels(p, key, cfg), Options: cfg.DriverOpts})
	return v, "", err
}

// oldImage is the disk image an earlier version left for the project's
// volume key (<dir>/volumes/<key>.img, or the store's <name>.img for an
// external volume), "" when there is none.
func oldImage(s *volume.Store, p *project.Project, key, dir string) string {
	old := filepath.Join(VolumeDir(dir), key+".img")
	if p.Volumes[key].External {
		old = filepath.Join(s.Dir(), VolumeName(p, key)+".img")
	}
	if fi, err := os.Lstat(old); err == nil && fi.Mode().IsRegular() {
		return old
	}
	return ""
}

// adopt moves the image of a volume an earlier version made into the
// store as name, leaving a symlink where it was for the VMs created
// before (their specs name the old path).
func adopt(s *volume.Store, name, old string, labels map[string]string) (volume.Volume, string, error) {
	v, moved, err := s.Adopt(name, old, labels)
	if err != nil {
		return volume.Volume{}, "", err
	}
	if !moved {
		return v, "", nil
	}
	os.Symlink(v.Mountpoint(), old)
	return v, fmt.Sprintf("Moved volume %s from %s into the volume store (%s)", name, old, v.Dir), nil
}

// volumeLabels are the labels of the project's volume key as docker
// compose sets them, with the volume's own.
func volumeLabels(p *project.Project, key string, cfg types.VolumeConfig) map[string]string {
	l := map[string]string{}
	for k, v := range cfg.Labels {
		l[k] = v
	}
	if !cfg.External {
		l[LabelProject], l[LabelVolume], l[LabelVersion] = p.Name, key, composeVersion()
	}
	return l
}

// VolumeUser is a VM whose spec attaches a volume of the store.
type VolumeUser struct {
	Project string // the state dir's name
	VM      string
	Running bool
}

func (u VolumeUser) String() string {
	state := "stopped"
	if u.Running {
		state = "running"
	}
	return fmt.Sprintf("VM %s of project %s (%s)", u.VM, u.Project, state)
}

// DriverFunc opens the VM driver of the project whose state dir is dir;
// nil when the project has no VMs.
type DriverFunc func(dir string) (vm.Driver, error)

// VolumeUsers returns, by volume name, the VMs of every project whose
// spec attaches a volume of s (a disk, or a share in a shared volume),
// running or not. The VMs' specs are the record of what they use: a
// VM, running or stopped, refers to the volumes it was created with.
func VolumeUsers(ctx context.Context, s *volume.Store, drivers DriverFunc) (map[string][]VolumeUser, error) {
	users := map[string][]VolumeUser{}
	err := eachVM(ctx, filepath.Dir(s.Dir()), drivers, func(u VolumeUser, spec vm.Spec) {
		for _, p := range specPaths(spec) {
			if name, ok := volumeOf(s, p); ok && !slices.Contains(users[name], u) {
				users[name] = append(users[name], u)
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("finding the users of volumes: %w", err)
	}
	return users, nil
}

// PathsInUse are the host files and directories that the VMs of every
// project (in the state root, running or not) attach: disks, root
// filesystems among them, and shares.
func PathsInUse(ctx context.Context, root string, drivers DriverFunc) (map[string]bool, error) {
	paths := map[string]bool{}
	err := eachVM(ctx, root, drivers, func(_ VolumeUser, spec vm.Spec) {
		for _, p := range specPaths(spec) {
			paths[filepath.Clean(p)] = true
		}
	})
	if err != nil {
		return nil, fmt.Errorf("finding what VMs use: %w", err)
	}
	return paths, nil
}

// specPaths are the host paths a VM's spec attaches.
func specPaths(spec vm.Spec) []string {
	var paths []string
	for _, d := range spec.Disks {
		paths = append(paths, d.Path)
	}
	for _, sh := range spec.Shares {
		paths = append(paths, sh.Source)
	}
	return paths
}

// eachVM calls fn with every VM of every project in the state root root,
// running or not, and its spec.
func eachVM(ctx context.Context, root string, drivers DriverFunc, fn func(VolumeUser, vm.Spec)) error {
	ents, err := os.ReadDir(root)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // no project yet
	}
	if err != nil {
		return err
	}
	for _, e := range ents {
		if !e.IsDir() || strings.HasPrefix(e.Name(), "_") || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		if err := projectVMs(ctx, filepath.Join(root, e.Name()), drivers, fn); err != nil {
			return err
		}
	}
	return nil
}

// projectVMs calls fn with each VM of the project in dir.
func projectVMs(ctx context.Context, dir string, drivers DriverFunc, fn func(VolumeUser, vm.Spec)) error {
	d, err := drivers(dir)
	if err != nil || d == nil {
		return err
	}
	l, lok := d.(vm.Lister)
	r, rok := d.(vm.SpecReader)
	if !lok || !rok {
		return nil
	}
	statuses, err := l.List(ctx)
	if err != nil {
		return err
	}
	for _, st := range statuses {
		spec, err := r.Spec(ctx, st.Name)
		if errors.Is(err, vm.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		fn(VolumeUser{Project: filepath.Base(dir), VM: st.Name, Running: st.State == vm.StateRunning}, spec)
	}
	return nil
}

// volumeOf is the store's volume a path of a VM's spec is part of,
// following the symlinks left where volumes were before the store.
func volumeOf(s *volume.Store, path string) (string, bool) {
	if name, ok := s.NameOf(path); ok {
		return name, true
	}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		return s.NameOf(real)
	}
	return "", false
}

// RemoveProjectVolumes removes the store's volumes created for the
// project (labelled with it), as docker compose down -v does: never
// volumes the project declares external, nor volumes of other projects
// it shares by name:, nor one a VM has open (kept, with a warning). Then
// the project's old volumes dir and what is left of its anonymous volumes
// go. It returns a line for the user about each volume.
func RemoveProjectVolumes(p *project.Project, dir string) (lines []string, err error) {
	s, err := OpenVolumes()
	if err != nil {
		return nil, err
	}
	vols, err := s.List()
	if err != nil {
		return nil, err
	}
	external := map[string]bool{}
	for key, cfg := range p.Volumes {
		if cfg.External {
			external[VolumeName(p, key)] = true
		}
	}
	for _, v := range volume.Labelled(vols, LabelProject, p.Name) {
		if external[v.Name] {
			continue
		}
		if open, _, err := v.Opened(); err == nil && open {
			lines = append(lines, fmt.Sprintf("warning: volume %s is in use by a running VM: kept", v.Name))
			continue
		}
		if err := s.Remove(v.Name); err != nil {
			return lines, err
		}
		lines = append(lines, "Volume "+v.Name+" Removed")
	}
	return lines, os.RemoveAll(VolumeDir(dir))
}

// checkVolumeDisks readies the store's disk volumes a VM attaches: a
// read-only disk whose journal needs replaying and that no VM has open is
// recovered first (notice says so); a disk another VM has open in a way
// QEMU would refuse (two writers, a reader beside a writer) is an error
// naming that VM.
func (r *Runtime) checkVolumeDisks(ctx context.Context, disks []vm.Disk) (notices []string, err error) {
	s, err := OpenVolumes()
	if err != nil {
		return nil, err
	}
	for _, d := range disks {
		name, ok := volumeOf(s, d.Path)
		if !ok {
			continue
		}
		open, writer, err := volume.Opened(d.Path)
		if err != nil {
			return nil, err
		}
		if open && (!d.ReadOnly || writer) {
			return nil, r.inUse(ctx, s, name)
		}
		if !d.ReadOnly {
			continue
		}
		v, err := s.Get(name)
		if err != nil {
			return nil, err
		}
		if done, err := s.Recover(ctx, v); err != nil {
			return nil, err
		} else if done {
			notices = append(notices, fmt.Sprintf("Replayed the journal of volume %s: its last writer was killed", name))
		}
	}
	return notices, nil
}

// inUse is the error for a VM that cannot attach the volume name because
// another has it open.
func (r *Runtime) inUse(ctx context.Context, s *volume.Store, name string) error {
	who := "another VM"
	if r.Drivers != nil {
		if users, err := VolumeUsers(ctx, s, r.Drivers); err == nil {
			var running []string
			for _, u := range users[name] {
				if u.Running {
					running = append(running, fmt.Sprintf("VM %s of project %s", u.VM, u.Project))
				}
			}
			if len(running) > 0 {
				who = strings.Join(running, ", ")
			}
		}
	}
	return fmt.Errorf("volume %s is in use by %s: a disk volume is attached to one VM at a time unless every one mounts it :ro (ext4 is not a cluster file system): stop that VM first", name, who)
}

// ExplainStart turns a VM's failure to start because its VMM could not
// lock a volume's disk (vm.DiskInUseError) into an error naming the
// volume and the VM that holds it; other errors are returned as they are.
func (r *Runtime) ExplainStart(ctx context.Context, err error) error {
	var e *vm.DiskInUseError
	if !errors.As(err, &e) {
		return err
	}
	s, serr := OpenVolumes()
	if serr != nil {
		return err
	}
	name, ok := volumeOf(s, e.Path)
	if !ok {
		return err
	}
	return r.inUse(ctx, s, name)
}

// RemoveVolume removes the store's volume name, as docker volume rm
// does, unless a VM refers to it: a running one always keeps it, a
// stopped one (which would not start without it) unless force. The error
// names the VMs.
func RemoveVolume(ctx context.Context, s *volume.Store, name string, force bool, drivers DriverFunc) error {
	v, err := s.Get(name)
	if err != nil {
		return err
	}
	users, err := VolumeUsers(ctx, s, drivers)
	if err != nil {
		return err
	}
	var block []string
	for _, u := range users[name] {
		if u.Running || !force {
			block = append(block, u.String())
		}
	}
	if open, _, err := v.Opened(); err == nil && open && len(block) == 0 {
		block = append(block, "a QEMU of another state dir")
	}
	if len(block) > 0 {
		fix := "remove it first (vmcompose down, or rm -f for a stopped VM)"
		return fmt.Errorf("volume %s is in use by %s: %s", name, strings.Join(block, ", "), fix)
	}
	return s.Remove(name)
}

// PruneVolumes removes the store's volumes that no VM refers to and no
// QEMU has open, as docker volume prune does: without all, only those no
// compose project created (without a com.docker.compose.project label).
// It returns the names removed and the host space they took.
func PruneVolumes(ctx context.Context, s *volume.Store, all bool, drivers DriverFunc) (removed []string, freed int64, err error) {
	vols, err := s.List()
	if err != nil {
		return nil, 0, err
	}
	users, err := VolumeUsers(ctx, s, drivers)
	if err != nil {
		return nil, 0, err
	}
	for _, v := range vols {
		if len(users[v.Name]) > 0 || (!all && v.Labels[LabelProject] != "") {
			continue
		}
		if open, _, err := v.Opened(); err != nil || open {
			continue
		}
		n, _ := v.Usage()
		if err := s.Remove(v.Name); err != nil {
			return removed, freed, err
		}
		removed, freed = append(removed, v.Name), freed+n
	}
	return removed, freed, nil
}
