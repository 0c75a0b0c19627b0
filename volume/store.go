package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vmcompose/vmcompose/internal/atomicfile"
	"github.com/vmcompose/vmcompose/vm"
)

// Kind is how a volume keeps its data.
type Kind string

const (
	// Disk volumes are an ext4 disk image (disk.img) attached to the VMs
	// that mount them: one writer at a time.
	Disk Kind = "disk"
	// Shared volumes are a host directory (shared/, whose data/ is
	// mounted) served to the VMs over virtiofs: any number of writers.
	Shared Kind = "shared"
)

// File names in a volume's directory.
const (
	infoFile  = "volume.json"
	diskFile  = "disk.img"
	sharedDir = "shared"
)

// ErrNotFound: no volume of that name is in the store.
var ErrNotFound = errors.New("no such volume")

// Info is what volume.json records of a volume.
type Info struct {
	Name      string            `json:"name"`
	Kind      Kind              `json:"kind"`
	CreatedAt time.Time         `json:"created"`
	Labels    map[string]string `json:"labels,omitempty"`
	// Options are the driver_opts it was created with (size, sharing).
	Options map[string]string `json:"driver_opts,omitempty"`
}

// Volume is a volume of the store.
type Volume struct {
	Info
	// Dir is the volume's directory in the store.
	Dir string `json:"-"`
}

// Mountpoint is where the volume's data is on the host: the disk image,
// or the shared directory (whose data/ the guests mount).
func (v Volume) Mountpoint() string {
	if v.Kind == Shared {
		return filepath.Join(v.Dir, sharedDir)
	}
	return filepath.Join(v.Dir, diskFile)
}

// Store is a directory of volumes.
type Store struct{ dir string }

// Open returns the store in dir, which it makes when missing.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("volume store: %w", err)
	}
	return &Store{dir: dir}, nil
}

// Dir is the store's directory.
func (s *Store) Dir() string { return s.dir }

// validName is docker's rule for volume names; it also keeps names to
// one path element that is not hidden (the store's temporary entries
// start with a dot).
var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`)

// CheckName says why name cannot be a volume's.
func CheckName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("volume name %q: want letters, digits, '_', '.' and '-', starting with a letter or a digit, at least 2 characters", name)
	}
	return nil
}

// Get returns the volume name; ErrNotFound when there is none.
func (s *Store) Get(name string) (Volume, error) {
	if err := CheckName(name); err != nil {
		return Volume{}, err
	}
	dir := filepath.Join(s.dir, name)
	b, err := os.ReadFile(filepath.Join(dir, infoFile))
	if errors.Is(err, fs.ErrNotExist) {
		return Volume{}, fmt.Errorf("volume %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return Volume{}, fmt.Errorf("volume %s: %w", name, err)
	}
	v := Volume{Dir: dir}
	if err := json.Unmarshal(b, &v.Info); err != nil {
		return Volume{}, fmt.Errorf("volume %s: %s: %w", name, infoFile, err)
	}
	if v.Name != name || (v.Kind != Disk && v.Kind != Shared) {
		return Volume{}, fmt.Errorf("volume %s: %s names %q of kind %q", name, infoFile, v.Name, v.Kind)
	}
	return v, nil
}

// List returns the store's volumes, sorted by name.
func (s *Store) List() ([]Volume, error) {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("volume store: %w", err)
	}
	var out []Volume
	for _, e := range ents {
		if !e.IsDir() || !validName.MatchString(e.Name()) {
			continue
		}
		v, err := s.Get(e.Name())
		if errors.Is(err, ErrNotFound) {
			continue // being removed
		}
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// Spec is what a new volume is made with.
type Spec struct {
	Kind   Kind
	Size   int64 // of a disk volume's image; DefaultSize when 0
	Labels map[string]string
	// Options are recorded as its driver_opts.
	Options map[string]string
}

// DefaultSize is the size of a disk volume's image when its spec has
// none: the image is sparse, so it takes only the host space its data
// does.
const DefaultSize = 4 << 30

// Create makes the volume name unless it exists, and returns it; created
// says whether this call made it. A volume that exists is returned as it
// is, whatever spec says.
func (s *Store) Create(ctx context.Context, name string, spec Spec) (v Volume, created bool, err error) {
	if v, err := s.Get(name); !errors.Is(err, ErrNotFound) {
		return v, false, err
	}
	info := Info{Name: name, Kind: spec.Kind, CreatedAt: time.Now().UTC().Truncate(time.Second),
		Labels: maps.Clone(spec.Labels), Options: maps.Clone(spec.Options)}
	return s.place(name, info, nil, func(tmp string) error {
		switch spec.Kind {
		case Disk:
			size := spec.Size
			if size == 0 {
				size = DefaultSize
			}
			return vm.CreateVolume(ctx, filepath.Join(tmp, diskFile), size)
		case Shared:
			// Root-owned 0755, as docker makes a volume's _data.
			return os.MkdirAll(filepath.Join(tmp, sharedDir, vm.VolumeData), 0o755)
		}
		return fmt.Errorf("kind %q: want %s or %s", spec.Kind, Disk, Shared)
	})
}

// Adopt moves the disk image at image (an ext4 file system, of a volume
// made before this store) into the store as the volume name, unless name
// exists. It is a rename: an image on another file system is refused, and
// nothing is copied.
func (s *Store) Adopt(name, image string, labels map[string]string) (v Volume, created bool, err error) {
	if v, err := s.Get(name); !errors.Is(err, ErrNotFound) {
		return v, false, err
	}
	info := Info{Name: name, Kind: Disk, CreatedAt: modTime(image), Labels: maps.Clone(labels)}
	back := func(tmp string) { os.Rename(filepath.Join(tmp, diskFile), image) }
	return s.place(name, info, back, func(tmp string) error {
		err := os.Rename(image, filepath.Join(tmp, diskFile))
		if errors.Is(err, syscall.EXDEV) {
			return fmt.Errorf("%s is on another file system than the volume store %s: move it to %s yourself", image, s.dir, filepath.Join(s.dir, name, diskFile))
		}
		return err
	})
}

// modTime is when the file at path was last changed, the best guess of
// an adopted image's creation.
func modTime(path string) time.Time {
	if fi, err := os.Stat(path); err == nil {
		return fi.ModTime().UTC().Truncate(time.Second)
	}
	return time.Now().UTC().Truncate(time.Second)
}

// place makes a volume in a directory aside with fill, records info in
// it and renames it into place as name. When another process placed name
// first, its volume is returned and ours removed. When anything fails
// after fill, back (when not nil) first moves out what fill moved in.
func (s *Store) place(name string, info Info, back func(tmp string), fill func(tmp string) error) (v Volume, created bool, err error) {
	if err := CheckName(name); err != nil {
		return Volume{}, false, err
	}
	tmp, err := os.MkdirTemp(s.dir, "."+name+".new-")
	if err != nil {
		return Volume{}, false, fmt.Errorf("volume %s: %w", name, err)
	}
	defer os.RemoveAll(tmp)
	if err := fill(tmp); err != nil {
		return Volume{}, false, fmt.Errorf("volume %s: %w", name, err)
	}
	dir := filepath.Join(s.dir, name)
	err = s.commit(tmp, dir, info)
	if err != nil && back != nil {
		back(tmp)
	}
	if errors.Is(err, fs.ErrExist) || errors.Is(err, syscall.ENOTEMPTY) {
		v, err := s.Get(name)
		return v, false, err
	}
	if err != nil {
		return Volume{}, false, fmt.Errorf("volume %s: %w", name, err)
	}
	return Volume{Info: info, Dir: dir}, true, nil
}

// commit writes info into the volume made in tmp and renames it to dir,
// which fails when dir exists.
func (s *Store) commit(tmp, dir string, info Info) error {
	b, err := json.MarshalIndent(info, "", "  ")
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(tmp, infoFile), append(b, '\n'), 0o600); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	return atomicfile.SyncDir(s.dir)
}

// Remove removes the volume name and its data. It does not check who
// uses it: the caller does (Open, and the VMs' specs). It is renamed
// aside first, so that it is gone at once for everyone, whatever removing
// its files takes.
func (s *Store) Remove(name string) error {
	v, err := s.Get(name)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(s.dir, "."+name+".rm-")
	if err != nil {
		return fmt.Errorf("removing volume %s: %w", name, err)
	}
	if err := os.Rename(v.Dir, filepath.Join(tmp, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("removing volume %s: %w", name, err)
	}
	if err := os.RemoveAll(tmp); err != nil {
		return fmt.Errorf("removing volume %s: %w", name, err)
	}
	return nil
}

// NameOf returns the name of the store's volume that path (a volume's
// disk image, or a path in its shared directory) is part of.
func (s *Store) NameOf(path string) (string, bool) {
	rel, err := filepath.Rel(s.dir, filepath.Clean(path))
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") {
		return "", false
	}
	name, rest, _ := strings.Cut(rel, string(filepath.Separator))
	if !validName.MatchString(name) || (rest != diskFile && rest != sharedDir && !strings.HasPrefix(rest, sharedDir+string(filepath.Separator))) {
		return "", false
	}
	return name, true
}

// Usage is the host space a volume's data takes: the blocks of its
// (sparse) disk image, or of the files in its shared directory.
func (v Volume) Usage() (int64, error) {
	var n int64
	err := filepath.WalkDir(v.Mountpoint(), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		} else {
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

// Labelled returns the volumes whose label key is value.
func Labelled(vols []Volume, key, value string) []Volume {
	return slices.DeleteFunc(slices.Clone(vols), func(v Volume) bool { return v.Labels[key] != value })
}

// Opened says whether a QEMU has the volume's disk open, and to write
// (see the package doc). A shared volume's users are found from the VMs'
// specs, not here: it reports none.
func (v Volume) Opened() (open, writer bool, err error) {
	if v.Kind != Disk {
		return false, false, nil
	}
	return Opened(v.Mountpoint())
}
