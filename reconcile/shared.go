package reconcile

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/volume"
)

// SharedVolumes names the project's volume keys whose volume in the store
// is shared (planner.Desired.SharedVolumes): a shared volume stays one.
func SharedVolumes(p *project.Project) map[string]bool {
	out := map[string]bool{}
	s, err := OpenVolumes()
	if err != nil {
		return out
	}
	for key, cfg := range p.Volumes {
		if bool(cfg.External) && filepath.IsAbs(cfg.Name) {
			continue
		}
		if v, err := s.Get(VolumeName(p, key)); err == nil && v.Kind == volume.Shared {
			out[key] = true
		}
	}
	return out
}

// ShareVolume makes the project's volume key a shared volume of the store
// (planner.NewShare), unless it is one: a new volume is made shared; a
// disk volume's data moves out of its image into the shared directory
// (volume.Store.MakeShared; moved says so), and the volume is marked
// seeded, as it had its first use. Call it once the VMs that have the
// disk (NewShare.Holders) are removed: any other VM whose spec still names
// the disk (drivers finds them, in every project) makes it an error
// naming that VM, as it would not start again.
func ShareVolume(ctx context.Context, p *project.Project, key, dir string, drivers DriverFunc) (moved bool, err error) {
	cfg := p.Volumes[key]
	if cfg.External {
		return false, fmt.Errorf("volume %q: external volume %q is not the project's to make shared", key, VolumeName(p, key))
	}
	s, err := OpenVolumes()
	if err != nil {
		return false, err
	}
	name := VolumeName(p, key)
	if _, err := s.Get(name); errors.Is(err, volume.ErrNotFound) && oldImage(s, p, key, dir) == "" {
		_, _, err := s.Create(ctx, name, volume.Spec{Kind: volume.Shared, Labels: volumeLabels(p, key, cfg), Options: cfg.DriverOpts})
		return false, err
	}
	v, _, err := storeVolume(ctx, p, key, dir) // moves an earlier version's image in
	if err != nil || v.Kind == volume.Shared {
		return false, err
	}
	if drivers != nil {
		users, err := VolumeUsers(ctx, s, drivers)
		if err != nil {
			return false, err
		}
		if u := users[name]; len(u) > 0 {
			var who []string
			for _, x := range u {
				who = append(who, x.String())
			}
			return false, fmt.Errorf("volume %q becomes shared, but %s still has %s as a disk: remove it first (vmcompose down, in its project)", key, strings.Join(who, ", "), name)
		}
	}
	if moved, err = s.MakeShared(ctx, name); err != nil {
		return false, fmt.Errorf("volume %q: moving its data into a directory (its disk image is kept: set driver_opts.sharing: disk to keep using it, with one writer): %w", key, err)
	}
	if v, err = s.Get(name); err != nil {
		return moved, err
	}
	return moved, markSeeded(v.Mountpoint())
}

// markSeeded records in the shared directory root that the volume had
// its first read-write mount, so that no guest seeds it (agent.ShareSeeded).
func markSeeded(root string) error {
	meta := filepath.Join(root, agent.ShareMeta)
	if err := os.MkdirAll(meta, 0o700); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(meta, agent.ShareSeeded), nil, 0o600)
}

// sharedVolume maps a service volume whose store volume is shared, with
// its shared directory root, to the VM's share (tag) and the guest's
// mount: every VM that mounts it is served root over virtiofs, with the
// host's file locks.
func sharedVolume(v types.ServiceVolumeConfig, root, tag string) (vm.Share, agent.Mount, error) {
	if v.Volume != nil && v.Volume.Subpath != "" {
		return vm.Share{}, agent.Mount{}, fmt.Errorf("volume %q: subpath is not supported yet", v.Source)
	}
	sh := vm.Share{Tag: tag, Source: root, ReadOnly: v.ReadOnly, Locks: true}
	m := agent.Mount{Type: agent.MountVolumeShare, Source: tag, Target: v.Target, ReadOnly: v.ReadOnly}
	if v.Volume != nil {
		m.NoCopy = v.Volume.NoCopy
	}
	return sh, m, nil
}
