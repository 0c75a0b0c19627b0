package reconcile

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/volume"
)

// DefaultVolumeSize is the size of an anonymous volume's disk image, and
// of a named one's whose driver_opts has no size: the image is sparse, so
// it only takes the host space its data does.
const DefaultVolumeSize = volume.DefaultSize

// VolumeDir is where the disk images of the named volumes of the project
// whose state dir is dir live: <dir>/volumes/<name>.img. `down -v` removes
// it; `down` keeps it.
func VolumeDir(dir string) string { return filepath.Join(dir, "volumes") }

// AnonVolumeDir holds the anonymous volumes of one VM; they are removed
// with the VM (RemoveAnonVolumes).
func AnonVolumeDir(dir, vmName string) string {
	return filepath.Join(VolumeDir(dir), "anonymous", vmName)
}

// RemoveAnonVolumes removes the anonymous volumes of the VM vmName of the
// project whose state dir is dir, as docker removes a container's with
// it: call it once the VM is removed. Named volumes stay.
func RemoveAnonVolumes(dir, vmName string) error {
	if err := os.RemoveAll(AnonVolumeDir(dir, vmName)); err != nil {
		return fmt.Errorf("removing the anonymous volumes of %s: %w", vmName, err)
	}
	os.Remove(filepath.Dir(AnonVolumeDir(dir, vmName))) // when it was the last
	return nil
}

// volumeSerial is the short serial under which a volume's disk shows in
// the guest: "v-" and 8 hex digits of the image's path.
func volumeSerial(path string) string {
	h := sha256.Sum256([]byte(path))
	return "v-" + hex.EncodeToString(h[:4])
}

// Storage is what a service's volumes make of its VM: the disks and
// shares it gets, and the mounts its guest makes.
type Storage struct {
	Disks  []vm.Disk
	Shares []vm.Share
	Mounts []agent.Mount
	// Notices are for the user: volumes moved into the store.
	Notices []string
}

// Volumes maps a service's volumes and tmpfs entries to the disks and
// shares its VM gets and the mounts its guest makes, creating the disk
// images of named and anonymous volumes on first use, and the missing
// source directories of bind mounts as docker compose does. dir is the
// project's state dir and vmName the instance's VM.
func Volumes(ctx context.Context, p *project.Project, svc types.ServiceConfig, dir, vmName string) (Storage, error) {
	var st Storage
	for _, t := range svc.Tmpfs {
		target, opts, _ := strings.Cut(t, ":")
		st.Mounts = append(st.Mounts, agent.Mount{Type: agent.MountTmpfs, Target: target, Options: opts})
	}
	for i, v := range svc.Volumes {
		switch v.Type {
		case types.VolumeTypeTmpfs:
			var opts []string
			if v.Tmpfs != nil {
				if v.Tmpfs.Size > 0 {
					opts = append(opts, "size="+strconv.FormatInt(int64(v.Tmpfs.Size), 10))
				}
				if v.Tmpfs.Mode != 0 {
					opts = append(opts, "mode="+strconv.FormatUint(uint64(v.Tmpfs.Mode), 8))
				}
			}
			st.Mounts = append(st.Mounts, agent.Mount{Type: agent.MountTmpfs, Target: v.Target, ReadOnly: v.ReadOnly, Options: strings.Join(opts, ",")})
		case types.VolumeTypeVolume:
			path, shared, notice, err := volumeImage(ctx, p, v, dir, vmName, i)
			if err != nil {
				return Storage{}, err
			}
			if notice != "" {
				st.Notices = append(st.Notices, notice)
			}
			if shared {
				sh, m, err := sharedVolume(v, path, fmt.Sprintf("vol%d", len(st.Shares)))
				if err != nil {
					return Storage{}, err
				}
				st.Shares = append(st.Shares, sh)
				st.Mounts = append(st.Mounts, m)
				continue
			}
			data, err := vm.VolumeDataDir(path)
			if err != nil {
				return Storage{}, fmt.Errorf("volume %q: %w", cmp.Or(v.Source, v.Target), err)
			}
			serial := volumeSerial(path)
			st.Disks = append(st.Disks, vm.Disk{Path: path, Serial: serial, ReadOnly: v.ReadOnly})
			m := agent.Mount{Type: agent.MountDisk, Source: serial, Target: v.Target, ReadOnly: v.ReadOnly, Subpath: data}
			if v.Volume != nil {
				if v.Volume.Subpath != "" {
					return Storage{}, fmt.Errorf("volume %q: subpath is not supported yet", v.Source)
				}
				m.NoCopy = v.Volume.NoCopy
			}
			st.Mounts = append(st.Mounts, m)
		case types.VolumeTypeBind:
			sh, m, err := bindShare(v, fmt.Sprintf("bind%d", len(st.Shares)))
			if err != nil {
				return Storage{}, err
			}
			st.Shares = append(st.Shares, sh)
			st.Mounts = append(st.Mounts, m)
		default:
			return Storage{}, fmt.Errorf("volume at %s: type %q is not supported", v.Target, v.Type)
		}
	}
	return st, nil
}

// bindShare maps a bind mount to the VM's share tag and the guest's
// virtiofs mount, creating a missing source directory. A file is shared
// alone (vm.Share) and bound at the target in the guest.
func bindShare(v types.ServiceVolumeConfig, tag string) (vm.Share, agent.Mount, error) {
	fi, err := project.CheckBind(v)
	if err != nil {
		return vm.Share{}, agent.Mount{}, err
	}
	if fi == nil {
		if err := os.MkdirAll(v.Source, 0o755); err != nil {
			return vm.Share{}, agent.Mount{}, fmt.Errorf("volumes: bind mount of %s at %s: creating the source: %w", v.Source, v.Target, err)
		}
	}
	sh := vm.Share{Tag: tag, Source: v.Source, ReadOnly: v.ReadOnly}
	m := agent.Mount{Type: agent.MountVirtiofs, Source: tag, Target: v.Target, ReadOnly: v.ReadOnly}
	if fi != nil && !fi.IsDir() {
		m.Subpath = filepath.Base(v.Source)
	}
	return sh, m, nil
}

// volumeImage returns the disk image of a service volume of type volume,
// or with shared the directory of a shared volume: the store's volume
// (see storeVolume), or an anonymous volume of the VM, created when
// missing. notice is for the user.
func volumeImage(ctx context.Context, p *project.Project, v types.ServiceVolumeConfig, dir, vmName string, index int) (path string, shared bool, notice string, err error) {
	if v.Source == "" {
		d := AnonVolumeDir(dir, vmName)
		path := filepath.Join(d, fmt.Sprintf("%d.img", index))
		return path, false, "", ensureImage(ctx, d, path, DefaultVolumeSize)
	}
	cfg, ok := p.Volumes[v.Source]
	if !ok {
		return "", false, "", fmt.Errorf("volume %q is not declared in the top-level volumes", v.Source)
	}
	if cfg.Driver != "" && cfg.Driver != "local" {
		return "", false, "", fmt.Errorf("volume %q: driver %q is not supported (only local disk images)", v.Source, cfg.Driver)
	}
	if bool(cfg.External) && filepath.IsAbs(cfg.Name) {
		// An ext4 image named by its path, outside the store.
		if _, err := os.Stat(cfg.Name); err != nil {
			return "", false, "", fmt.Errorf("external volume %q: no disk image %s: create it (an ext4 image) first", v.Source, cfg.Name)
		}
		return cfg.Name, false, "", nil
	}
	vol, notice, err := storeVolume(ctx, p, v.Source, dir)
	if err != nil {
		return "", false, "", err
	}
	return vol.Mountpoint(), vol.Kind == volume.Shared, notice, nil
}

// ensureImage creates the volume disk path (in d) unless it exists. It is
// made aside and linked into place, so that a VM booting at the same time
// (a read-only user of the volume) never sees it half made.
func ensureImage(ctx context.Context, d, path string, size int64) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	if err := os.MkdirAll(d, 0o700); err != nil {
		return fmt.Errorf("volume: %w", err)
	}
	f, err := os.CreateTemp(d, "."+filepath.Base(path)+".new-")
	if err != nil {
		return fmt.Errorf("volume: %w", err)
	}
	tmp := f.Name()
	f.Close()
	os.Remove(tmp)
	defer os.Remove(tmp)
	if err := vm.CreateVolume(ctx, tmp, size); err != nil {
		return fmt.Errorf("volume: %w", err)
	}
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("volume: %w", err)
	}
	return nil
}

// VolumeWarnings says what of the services' bind mounts vmcompose
// ignores (see BindWarnings).
func VolumeWarnings(p *project.Project) []string {
	var out []string
	for _, name := range p.ServiceNames() {
		out = append(out, BindWarnings(p.Services[name])...)
	}
	return out
}

// BindWarnings says what of a service's bind mounts vmcompose ignores:
// bind.propagation (a VM's mounts are its own kernel's: mounts made later
// on either side never reach the other) and bind.selinux (nothing is
// relabelled).
func BindWarnings(svc types.ServiceConfig) []string {
	var out []string
	for _, v := range svc.Volumes {
		if v.Type != types.VolumeTypeBind || v.Bind == nil {
			continue
		}
		if v.Bind.Propagation != "" {
			out = append(out, fmt.Sprintf("service %q: volumes: bind mount at %s: bind.propagation %q is ignored: a VM's mounts are its own", svc.Name, v.Target, v.Bind.Propagation))
		}
		if v.Bind.SELinux != "" {
			out = append(out, fmt.Sprintf("service %q: volumes: bind mount at %s: bind.selinux %q is ignored: the source is not relabelled", svc.Name, v.Target, v.Bind.SELinux))
		}
	}
	return out
}
