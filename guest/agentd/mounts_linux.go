package agentd

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/guest/boot"
)

// mountVolumes mounts spec's volumes, shallowest target first.
func mountVolumes(mounts []agent.Mount) error {
	ms := append([]agent.Mount{}, mounts...)
	sort.SliceStable(ms, func(i, j int) bool {
		return strings.Count(filepath.Clean(ms[i].Target), "/") < strings.Count(filepath.Clean(ms[j].Target), "/")
	})
	var serials []string
	for _, m := range ms {
		if m.Type == agent.MountDisk {
			serials = append(serials, m.Source)
		}
	}
	disks := boot.FindDisks(serials, nil, 2*time.Second)
	for _, m := range ms {
		if err := mountVolume(m, disks); err != nil {
			return fmt.Errorf("%w: volume at %s: %v", agent.ErrInvalid, m.Target, err)
		}
	}
	return nil
}

func mountVolume(m agent.Mount, disks map[string]string) error {
	if !filepath.IsAbs(m.Target) {
		return errors.New("target is not an absolute path")
	}
	target := filepath.Clean(m.Target)
	var flags uintptr
	if m.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	var src, fstype string
	switch m.Type {
	case agent.MountDisk:
		dev, ok := disks[m.Source]
		if !ok {
			return fmt.Errorf("no disk with serial %q", m.Source)
		}
		src, fstype = dev, "ext4"
	case agent.MountVirtiofs:
		if m.Subpath != "" {
			return mountShareEntry(m, target, flags)
		}
		src, fstype = m.Source, "virtiofs"
	case agent.MountVolumeShare:
		src, fstype = m.Source, "virtiofs"
	case agent.MountTmpfs:
		src, fstype = "tmpfs", "tmpfs"
		flags |= unix.MS_NOSUID | unix.MS_NODEV
	default:
		return fmt.Errorf("type %q: want disk, volume-share, virtiofs or tmpfs", m.Type)
	}
	imageHad := hasEntries(target)
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	switch m.Type {
	case agent.MountDisk, agent.MountVolumeShare:
		return mountAside(src, fstype, target, m, flags, !m.NoCopy && imageHad)
	}
	if err := unix.Mount(src, target, fstype, flags, m.Options); err != nil {
		return fmt.Errorf("mounting %s %s: %w", fstype, src, err)
	}
	return nil
}

// mountShareEntry mounts the entry m.Subpath of the virtiofs share
// m.Source at target: the share is mounted aside, the entry bound at
// target (made as a file or a directory, as the entry is, when missing, as
// docker does), and the share unmounted again, so that only the entry
// shows.
func mountShareEntry(m agent.Mount, target string, flags uintptr) error {
	stage, err := os.MkdirTemp("/run", "share-")
	if err != nil {
		return err
	}
	defer os.Remove(stage)
	if err := unix.Mount(m.Source, stage, "virtiofs", flags, m.Options); err != nil {
		return fmt.Errorf("mounting virtiofs %s: %w", m.Source, err)
	}
	defer unix.Unmount(stage, unix.MNT_DETACH)
	src := filepath.Join(stage, filepath.Clean("/"+m.Subpath))
	fi, err := os.Stat(src)
	if err != nil {
		return fmt.Errorf("share %s: %w", m.Source, err)
	}
	if fi.IsDir() {
		err = os.MkdirAll(target, 0o755)
	} else if err = os.MkdirAll(filepath.Dir(target), 0o755); err == nil {
		var f *os.File
		if f, err = os.OpenFile(target, os.O_RDONLY|os.O_CREATE, 0o644); err == nil {
			f.Close()
		}
	}
	if err != nil {
		return err
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding %s of share %s: %w", m.Subpath, m.Source, err)
	}
	if flags&unix.MS_RDONLY != 0 {
		if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("making %s read-only: %w", target, err)
		}
	}
	return nil
}

// mountAside mounts a volume's directory at target: the file system
// (an ext4 disk dev, or the virtiofs share of a shared volume) is mounted
// aside, its data directory (m.Subpath of a disk, empty for its root;
// agent.ShareData of a share) bound at target and the file system
// unmounted from aside, so that only the data shows (not a disk's
// lost+found, nor a share's agent.ShareMeta). With copyUp, an empty volume
// mounted read-write first gets a copy of what the image has at target; a
// read-only one cannot take it.
func mountAside(dev, fstype, target string, m agent.Mount, flags uintptr, copyUp bool) error {
	stage, err := os.MkdirTemp("/run", "volume-")
	if err != nil {
		return err
	}
	defer os.Remove(stage)
	if err := unix.Mount(dev, stage, fstype, flags, m.Options); err != nil {
		return fmt.Errorf("mounting %s %s: %w", fstype, dev, err)
	}
	defer unix.Unmount(stage, unix.MNT_DETACH)
	sub := m.Subpath
	if m.Type == agent.MountVolumeShare {
		sub = agent.ShareData
	}
	src := filepath.Join(stage, filepath.Clean("/"+sub))
	if fi, err := os.Stat(src); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s %s has no directory %s: %v", fstype, dev, sub, err)
	}
	if flags&unix.MS_RDONLY == 0 {
		if err := seed(stage, src, target, sub == "", copyUp); err != nil {
			return fmt.Errorf("copying the image's %s into the volume: %w", target, err)
		}
	}
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding %s %s at %s: %w", fstype, dev, target, err)
	}
	if flags&unix.MS_RDONLY != 0 {
		if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("making %s read-only: %w", target, err)
		}
	}
	return nil
}

// seed copies image (what the image has at the mount point) into the
// volume's empty data directory with copyUp, on the volume's first
// read-write mount only. The volume's root (stage) remembers that first
// mount in agent.ShareMeta, where a lock held across the decision makes
// one of several VMs that mount a shared volume at once seed it while the
// others wait. A volume whose data is its disk's root (root) has nowhere
// to keep that, and is seeded whenever it is empty, as before.
func seed(stage, data, image string, root, copyUp bool) error {
	if root {
		if copyUp && volumeEmpty(data, true) {
			return copyTree(image, data)
		}
		return nil
	}
	meta := filepath.Join(stage, agent.ShareMeta)
	if err := os.MkdirAll(meta, 0o700); err != nil {
		return err
	}
	// Another VM sharing the volume may have put anything there: no
	// symlink is followed, no fifo waited on.
	lock, err := os.OpenFile(filepath.Join(meta, agent.ShareLock), os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0o600)
	if err != nil {
		return err
	}
	defer lock.Close() // and the lock with it
	if err := flockWait(lock, 5*time.Minute); err != nil {
		return fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	marker := filepath.Join(meta, agent.ShareSeeded)
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	if copyUp && volumeEmpty(data, false) {
		if err := copyTree(image, data); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(marker, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// flockWait takes an exclusive flock(2) on f, waiting up to timeout for
// another VM to release it. It polls: QEMU's virtiofsd, which carries the
// lock to the host's file, answers a blocking flock with EOPNOTSUPP.
func flockWait(f *os.File, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// volumeEmpty reports whether the volume directory dir holds nothing; at
// a file system's root, lost+found does not count.
func volumeEmpty(dir string, root bool) bool {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	for _, e := range ents {
		if !root || e.Name() != "lost+found" {
			return false
		}
	}
	return true
}

func hasEntries(dir string) bool {
	f, err := os.Open(dir)
	if err != nil {
		return false
	}
	defer f.Close()
	names, _ := f.Readdirnames(1)
	return len(names) > 0
}

// copyTree copies the directory src into dst (which exists): regular
// files, directories and symlinks, with owners, modes and times; dst's own
// owner and mode become src's.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if rel != "." {
				if err := os.Mkdir(to, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
					return err
				}
			}
		case unix.S_IFREG:
			if err := copyFile(path, to); err != nil {
				return err
			}
		case unix.S_IFLNK:
			link, err := os.Readlink(path)
			if err != nil {
				return err
			}
			if err := os.Symlink(link, to); err != nil {
				return err
			}
			return unix.Lchown(to, int(st.Uid), int(st.Gid))
		default:
			return nil // devices, fifos, sockets: not copied
		}
		if err := unix.Lchown(to, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		if err := unix.Chmod(to, st.Mode&0o7777); err != nil {
			return err
		}
		return unix.UtimesNano(to, []unix.Timespec{st.Atim, st.Mtim})
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// writeFiles writes spec's secrets and configs. Secrets never touch a
// disk: those under agent.SecretsDir go to a tmpfs mounted there first
// and made read-only once all are written; one with a target elsewhere
// (an absolute target) is written to a tmpfs of its own and bind-mounted
// read-only there, as docker bind-mounts secrets. Configs are written in
// place, on the root (before read_only makes it read-only) or a volume.
// Errors name the path, never the content.
func writeFiles(files []agent.File) error {
	dir := false
	for _, f := range files {
		if !filepath.IsAbs(f.Path) {
			return fmt.Errorf("%w: file %q: not an absolute path", agent.ErrInvalid, f.Path)
		}
		dir = dir || (f.Secret && inSecretsDir(f.Path))
	}
	if dir {
		if err := os.MkdirAll(agent.SecretsDir, 0o755); err != nil {
			return fmt.Errorf("%w: %s: %v", agent.ErrInvalid, agent.SecretsDir, err)
		}
		if err := unix.Mount("tmpfs", agent.SecretsDir, "tmpfs", secretFlags, "mode=0755"); err != nil {
			return fmt.Errorf("%w: mounting a tmpfs at %s: %v", agent.ErrInvalid, agent.SecretsDir, err)
		}
	}
	for _, f := range files {
		var err error
		if f.Secret && !inSecretsDir(f.Path) {
			err = bindSecret(f)
		} else {
			err = writeFile(filepath.Clean(f.Path), f)
		}
		if err != nil {
			return fmt.Errorf("%w: file %s: %v", agent.ErrInvalid, f.Path, err)
		}
	}
	if dir {
		if err := unix.Mount("", agent.SecretsDir, "", unix.MS_REMOUNT|unix.MS_RDONLY|secretFlags, "mode=0755"); err != nil {
			return fmt.Errorf("%w: making %s read-only: %v", agent.ErrInvalid, agent.SecretsDir, err)
		}
	}
	return nil
}

// secretFlags are the mount flags of the tmpfs that hold secrets.
const secretFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC

func inSecretsDir(path string) bool {
	return strings.HasPrefix(filepath.Clean(path), agent.SecretsDir+"/")
}

// bindSecret writes the secret f to a tmpfs mounted aside, binds it at
// f.Path (made as an empty file when missing) read-only and unmounts the
// tmpfs from aside, so that only the file shows.
func bindSecret(f agent.File) error {
	stage, err := os.MkdirTemp("/run", "secret-")
	if err != nil {
		return err
	}
	defer os.Remove(stage)
	if err := unix.Mount("tmpfs", stage, "tmpfs", secretFlags, "mode=0700"); err != nil {
		return fmt.Errorf("mounting a tmpfs: %w", err)
	}
	defer unix.Unmount(stage, unix.MNT_DETACH)
	src := filepath.Join(stage, "secret")
	if err := writeFile(src, f); err != nil {
		return err
	}
	target := filepath.Clean(f.Path)
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		return err
	}
	t, err := os.OpenFile(target, os.O_RDONLY|os.O_CREATE, 0o444)
	if err != nil {
		return err
	}
	t.Close()
	if err := unix.Mount(src, target, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding the secret: %w", err)
	}
	return unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|secretFlags, "")
}

// writeFile writes f's content at path: a temporary file beside it,
// owner and mode, then a rename, so the service never sees half a file.
func writeFile(path string, f agent.File) error {
	mode := os.FileMode(f.Mode & 0o7777)
	if f.Mode == 0 {
		mode = 0o444
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".vminit-tmp"
	err := os.WriteFile(tmp, f.Content, 0o600)
	if err == nil {
		err = os.Chown(tmp, f.UID, f.GID)
	}
	if err == nil {
		err = os.Chmod(tmp, mode)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
