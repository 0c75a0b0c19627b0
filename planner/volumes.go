package planner

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/volume/driveropts"
)

// VolumeSharing reads the driver options of the top-level volume cfg
// and returns how it is served (driveropts.Auto when it says nothing): a
// disk image while one VM alone writes it (Auto, Disk), or a directory on
// the host served to every VM that mounts it over virtiofs (Shared, and
// Auto once a second VM would mount it beside a writer). An option the
// volume store would refuse is an error.
func VolumeSharing(cfg types.VolumeConfig) (driveropts.Sharing, error) {
	if s := driveropts.Sharing(cfg.DriverOpts["sharing"]); s != "" && !s.Valid() {
		return "", fmt.Errorf("driver_opts.sharing: %q is not a sharing mode: use auto, shared or disk", s)
	}
	o, err := driveropts.Parse(cfg.DriverOpts)
	return o.Sharing, err
}

// NewShare is a named volume that becomes a shared directory in this up.
type NewShare struct {
	Volume string `json:"volume"`
	// Services mount it, planned or running.
	Services []string `json:"services"`
	// Holders are the VMs that have it as a disk image now: they are
	// removed (the plan recreates them) before its data moves into the
	// directory and anything mounts that, so that no VM ever has the
	// volume as a disk while another has it as a directory.
	Holders []string `json:"holders,omitempty"`
}

// Users names the services that share the volume: "web and worker",
// "a, b and c".
func (s NewShare) Users() string {
	n := len(s.Services)
	if n < 2 {
		return strings.Join(s.Services, "")
	}
	return strings.Join(s.Services[:n-1], ", ") + " and " + s.Services[n-1]
}

// sharedField prefixes the field of a service's Fields that says one of
// its named volumes is a shared directory, not a disk: "shared:<volume>".
// A service without shared volumes hashes as before sharing existed.
const sharedField = "shared:"

// addShared adds to f a field for each of volumes (the service's named
// volumes that are shared directories, Op.Shared), so that a volume that
// becomes shared recreates the VMs that had it as a disk.
func (f Fields) addShared(volumes []string) {
	for _, v := range volumes {
		f[sharedField+v] = digestOf([]byte(driveropts.Shared))
	}
}

// volumeUse counts the VMs that mount a named volume.
type volumeUse struct {
	writers []string       // services that write it: running others by name, then planned by name
	vms     map[string]int // writing VMs by service
	total   int            // writing VMs
	readers []string       // services that mount it read-only only, in the same order
	rvms    int            // VMs that mount it read-only only
}

// disks says whether the volume can be one VM's disk image: QEMU gives a
// writable image to one VM and refuses readers beside it, so a writer
// beside anything else needs a shared directory.
func (u *volumeUse) disk() bool {
	return u == nil || u.total == 0 || (u.total == 1 && u.rvms == 0)
}

// volumeUses counts, volume by volume, the VMs that would mount it
// read-write and read-only: the running VMs of the services not planned (others, with
// running their number), and the replicas of the planned services.
func volumeUses(planned types.Services, scale map[string]int, others types.Services, running map[string]int) map[string]*volumeUse {
	uses := map[string]*volumeUse{}
	add := func(svc types.ServiceConfig, n int) {
		for vol, readOnly := range namedMounts(svc) {
			if n <= 0 {
				continue
			}
			u := uses[vol]
			if u == nil {
				u = &volumeUse{vms: map[string]int{}}
				uses[vol] = u
			}
			switch {
			case readOnly:
				u.readers = append(u.readers, svc.Name)
				u.rvms += n
			case u.vms[svc.Name] == 0:
				u.writers = append(u.writers, svc.Name)
				fallthrough
			default:
				u.vms[svc.Name] += n
				u.total += n
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(running)) {
		if svc, ok := others[name]; ok {
			add(svc, running[name])
		}
	}
	for _, name := range slices.Sorted(maps.Keys(planned)) {
		if n, err := replicas(planned[name], scale); err == nil { // Up fails on the error
			add(planned[name], n)
		}
	}
	return uses
}

// sharedVolumes decides which named volumes are served as directories:
// those with sharing: shared, those already shared on the host (a
// directory stays one), and with sharing: auto those that more than one VM
// would mount when one of them writes it. An external volume is what it was made as: the project does
// not change it.
func sharedVolumes(desired Desired, planned types.Services, scale map[string]int, running map[string]int) map[string]bool {
	uses := volumeUses(planned, scale, desired.Project.Services, running)
	out := map[string]bool{}
	for name, cfg := range desired.Project.Volumes {
		sharing, err := VolumeSharing(cfg)
		switch {
		case err != nil:
		case bool(cfg.External):
			if desired.SharedVolumes[name] {
				out[name] = true
			}
		case sharing == driveropts.Shared, sharing == driveropts.Auto && desired.SharedVolumes[name]:
			out[name] = true
		case sharing == driveropts.Auto && !uses[name].disk():
			out[name] = true
		}
	}
	return out
}

// volumeProblems finds, for the planned services, the named volumes they
// cannot mount: a sharing option that means nothing, a disk image (sharing:
// disk, or an external volume) that more than one VM would write, and
// sharing: disk on a volume that is a directory already. Of the planned
// writers of a disk image, the first by name keeps it when no VM that runs
// holds it, and the others are refused, as is a service whose replicas
// would share it.
func volumeProblems(desired Desired, planned types.Services, scale map[string]int, running map[string]int) map[string][]string {
	out := map[string][]string{}
	uses := volumeUses(planned, scale, desired.Project.Services, running)
	for _, vol := range slices.Sorted(maps.Keys(desired.Project.Volumes)) {
		cfg := desired.Project.Volumes[vol]
		sharing, err := VolumeSharing(cfg)
		var msg string
		switch {
		case err != nil:
			msg = fmt.Sprintf("volumes: %q: %v", vol, err)
		case sharing == driveropts.Disk && desired.SharedVolumes[vol] && !bool(cfg.External):
			msg = fmt.Sprintf("volumes: %q has sharing: disk, but it is a shared directory on the host already: set sharing: auto, or remove the volume with `vmcompose down -v` to start again with a disk image", vol)
		}
		for _, name := range slices.Sorted(maps.Keys(planned)) {
			if msg != "" && mounts(planned[name], vol) {
				out[name] = append(out[name], msg)
			}
		}
		if msg != "" || uses[vol] == nil || desired.SharedVolumes[vol] || (sharing != driveropts.Disk && !bool(cfg.External)) {
			continue
		}
		why := "it has sharing: disk"
		fix := "or set sharing: auto (a directory all of them share)"
		if cfg.External {
			why, fix = "it is an external disk volume", "or use a shared volume (`vmcompose volume create --opt sharing=shared`)"
		}
		u := uses[vol]
		if u.total > 0 {
			for _, svc := range u.readers {
				if _, ok := planned[svc]; ok {
					out[svc] = append(out[svc], fmt.Sprintf("volumes: %q is mounted read-only here while %q writes it, but %s: %s: drop this mount, %s", vol, u.writers[0], why, diskAlone, fix))
				}
			}
		}
		for i, svc := range u.writers {
			if _, ok := planned[svc]; !ok {
				continue
			}
			switch n := u.vms[svc]; {
			case n > 1:
				out[svc] = append(out[svc], fmt.Sprintf("volumes: %q is mounted read-write by its %d replicas, but %s: %s: run one replica, %s", vol, n, why, diskAlone, fix))
			case i > 0:
				out[svc] = append(out[svc], fmt.Sprintf("volumes: %q is mounted read-write by services %q and %q, but %s: %s: mount it in one of them only, %s", vol, u.writers[0], svc, why, diskAlone, fix))
			}
		}
	}
	return out
}

// namedMounts maps the named volumes svc mounts to whether it mounts them
// read-only only (a service that mounts one twice, once read-write,
// writes it).
func namedMounts(svc types.ServiceConfig) map[string]bool {
	out := map[string]bool{}
	for _, v := range svc.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source != "" {
			ro, seen := out[v.Source]
			out[v.Source] = v.ReadOnly && (ro || !seen)
		}
	}
	return out
}

// diskAlone is why a disk image cannot be shared: a second kernel that
// mounts it, even read-only, reads a file system changing under it.
const diskAlone = "a disk image that a VM writes is that VM's alone (ext4 is not a cluster file system)"

// mounts reports whether svc mounts the named volume vol.
func mounts(svc types.ServiceConfig, vol string) bool {
	return slices.ContainsFunc(svc.Volumes, func(v types.ServiceVolumeConfig) bool {
		return v.Type == types.VolumeTypeVolume && v.Source == vol
	})
}

// sharedOf lists the named volumes of svc that are shared, sorted: what
// Op.Shared holds.
func sharedOf(svc types.ServiceConfig, shared map[string]bool) []string {
	var out []string
	for _, v := range svc.Volumes {
		if v.Type == types.VolumeTypeVolume && shared[v.Source] && !slices.Contains(out, v.Source) {
			out = append(out, v.Source)
		}
	}
	slices.Sort(out)
	return out
}

// newShares lists the volumes that become shared in this up, with the
// VMs that have them as disks (holders: those of planned services, which
// the plan recreates), and the problems of the planned services that
// mount one that a VM the plan keeps has as a disk: a VM of a service not
// in this up, or one that --no-recreate keeps.
func newShares(desired Desired, planned types.Services, shared map[string]bool, have map[string][]Instance, noRecreate bool) ([]NewShare, map[string][]string) {
	var out []NewShare
	problems := map[string][]string{}
	all := maps.Clone(desired.Project.Services)
	maps.Copy(all, desired.Project.DisabledServices)
	for _, vol := range slices.Sorted(maps.Keys(shared)) {
		if desired.SharedVolumes[vol] {
			continue
		}
		ns := NewShare{Volume: vol}
		var kept []string // holders the plan does not remove
		for _, name := range slices.Sorted(maps.Keys(all)) {
			if !mounts(all[name], vol) {
				continue
			}
			_, isPlanned := planned[name]
			if isPlanned || countRunning(have[name]) > 0 {
				ns.Services = append(ns.Services, name)
			}
			for _, inst := range have[name] {
				if _, ok := inst.Fields[sharedField+vol]; ok {
					continue
				}
				if !isPlanned || noRecreate {
					kept = append(kept, inst.Name())
					continue
				}
				ns.Holders = append(ns.Holders, inst.Name())
			}
		}
		for _, name := range slices.Sorted(maps.Keys(planned)) {
			if len(kept) > 0 && mounts(planned[name], vol) {
				problems[name] = append(problems[name], fmt.Sprintf("volumes: %q becomes shared (a directory every VM that mounts it shares), but %s keeps it as a disk image: include %s in the up, without --no-recreate",
					vol, strings.Join(kept, ", "), strings.Join(serviceNames(kept), " and ")))
			}
		}
		out = append(out, ns)
	}
	return out, problems
}

func countRunning(is []Instance) int {
	n := 0
	for _, in := range is {
		if in.State == Running {
			n++
		}
	}
	return n
}

// serviceNames are the services of instance names, deduplicated.
func serviceNames(instances []string) []string {
	var out []string
	for _, in := range instances {
		if svc, _, ok := ParseInstance(in); ok && !slices.Contains(out, svc) {
			out = append(out, svc)
		}
	}
	return out
}
