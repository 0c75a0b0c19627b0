package reconcile

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/internal/atomicfile"
	"github.com/vmcompose/vmcompose/vm"
)

// sharedSuffix ends the name of a shared volume's root in VolumeDir.
const sharedSuffix = ".shared"

// SharedVolumeDir is the root of the named volume key of the project
// whose state dir is dir once it is shared by several VMs: a directory
// that holds the volume's data in agent.ShareData and, in agent.ShareMeta,
// what the guests use to seed it once. Every VM that mounts the volume is
// served this directory over virtiofs.
func SharedVolumeDir(dir, key string) string {
	return filepath.Join(VolumeDir(dir), key+sharedSuffix)
}

// volumeImagePath is the disk image of the project's named volume key
// while it is not shared.
func volumeImagePath(dir, key string) string {
	return filepath.Join(VolumeDir(dir), key+".img")
}

// SharedVolumes names the project's named volumes that are shared
// directories on the host (planner.Desired.SharedVolumes).
func SharedVolumes(dir string) map[string]bool {
	out := map[string]bool{}
	ents, _ := os.ReadDir(VolumeDir(dir))
	for _, e := range ents {
		if key, ok := strings.CutSuffix(e.Name(), sharedSuffix); ok && e.IsDir() && !strings.HasPrefix(key, ".") {
			out[key] = true
		}
	}
	return out
}

// ShareVolume makes the project's named volume key a shared directory,
// unless it is one: with the data of its disk image when it has one
// (moved reports it), empty otherwise. Call it with no VM running that
// has the image attached (planner.NewShare.Holders). The directory is
// made aside, filled, synced and renamed into place before the image is
// removed, so a crash at any point loses nothing: the image stays until
// the directory is there, and a directory found with an image beside it
// is the complete one.
func ShareVolume(ctx context.Context, dir, key string) (moved bool, err error) {
	root, img := SharedVolumeDir(dir, key), volumeImagePath(dir, key)
	if _, err := os.Stat(root); err == nil {
		return false, removeMoved(img)
	}
	if err := os.MkdirAll(VolumeDir(dir), 0o700); err != nil {
		return false, fmt.Errorf("volume %q: %w", key, err)
	}
	stale, _ := filepath.Glob(filepath.Join(VolumeDir(dir), "."+key+sharedSuffix+".new-*"))
	for _, s := range stale {
		os.RemoveAll(s)
	}
	tmp, err := os.MkdirTemp(VolumeDir(dir), "."+key+sharedSuffix+".new-")
	if err != nil {
		return false, fmt.Errorf("volume %q: %w", key, err)
	}
	defer os.RemoveAll(tmp) // gone once renamed
	if err := os.Mkdir(filepath.Join(tmp, agent.ShareMeta), 0o700); err != nil {
		return false, fmt.Errorf("volume %q: %w", key, err)
	}
	data := filepath.Join(tmp, agent.ShareData)
	_, err = os.Stat(img)
	moved = err == nil
	if moved {
		if err := vm.ExtractVolume(ctx, img, data); err != nil {
			return false, fmt.Errorf("volume %q: moving its data into a directory (the disk image %s is kept: set driver_opts.sharing: disk to keep using it, with one writer): %w", key, img, err)
		}
		// The disk was mounted read-write before: it had its first use.
		if err := os.WriteFile(filepath.Join(tmp, agent.ShareMeta, agent.ShareSeeded), nil, 0o600); err != nil {
			return false, fmt.Errorf("volume %q: %w", key, err)
		}
	} else if err := os.Mkdir(data, 0o755); err != nil { // as docker makes a volume's _data
		return false, fmt.Errorf("volume %q: %w", key, err)
	}
	if err := syncFS(tmp); err != nil {
		return false, fmt.Errorf("volume %q: %w", key, err)
	}
	if err := os.Rename(tmp, root); err != nil {
		return false, fmt.Errorf("volume %q: %w", key, err)
	}
	if err := atomicfile.SyncDir(VolumeDir(dir)); err != nil {
		return moved, fmt.Errorf("volume %q: %w", key, err)
	}
	return moved, removeMoved(img)
}

// removeMoved removes the disk image of a volume whose data is in its
// shared directory.
func removeMoved(img string) error {
	if err := os.Remove(img); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the moved disk image: %w", err)
	}
	return nil
}

// syncFS writes what was written under dir to disk, files and names,
// which one sync(2) does for a whole tree.
func syncFS(string) error {
	unix.Sync()
	return nil
}

// sharedVolume maps a service volume of type volume that is a shared
// directory to the VM's share (tag) and the guest's mount; ok is false
// when the volume is not shared (it is a disk image then). Whether it is
// is the host's state, which the plan's NewShares set before any VM that
// mounts it is created.
func sharedVolume(v types.ServiceVolumeConfig, dir, tag string) (sh vm.Share, m agent.Mount, ok bool, err error) {
	if v.Source == "" {
		return vm.Share{}, agent.Mount{}, false, nil
	}
	root := SharedVolumeDir(dir, v.Source)
	if fi, err := os.Stat(root); err != nil || !fi.IsDir() {
		return vm.Share{}, agent.Mount{}, false, nil
	}
	if v.Volume != nil && v.Volume.Subpath != "" {
		return vm.Share{}, agent.Mount{}, false, fmt.Errorf("volume %q: subpath is not supported yet", v.Source)
	}
	sh = vm.Share{Tag: tag, Source: root, ReadOnly: v.ReadOnly, Locks: true}
	m = agent.Mount{Type: agent.MountVolumeShare, Source: tag, Target: v.Target, ReadOnly: v.ReadOnly}
	if v.Volume != nil {
		m.NoCopy = v.Volume.NoCopy
	}
	return sh, m, true, nil
}
