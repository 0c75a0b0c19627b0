package boot

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Disk serials the host gives the virtio-blk devices.
const (
	// RootSerial is the image's read-only ext4.
	RootSerial = "rootfs"
	// ScratchSerial is the service's writable disk: an ext4 filesystem the
	// host formatted (vminit has no mkfs). Without it the overlay's upper
	// layer is a tmpfs and writes are lost at power-off.
	ScratchSerial = "scratch"
)

// Paths inside the initramfs where the disks are mounted before the switch.
const (
	lowerDir   = "/run/vmcompose/lower"
	scratchDir = "/run/vmcompose/scratch"
	newRoot    = "/run/vmcompose/root"
)

// Early mounts /proc, /sys and /dev (devtmpfs) in the initramfs and points
// stdin at /dev/null and stdout, stderr at /dev/console. Run it first.
func Early() error {
	for _, m := range []struct{ src, dst, fstype string }{
		{"proc", "/proc", "proc"},
		{"sysfs", "/sys", "sysfs"},
		{"devtmpfs", "/dev", "devtmpfs"},
	} {
		if err := mount(m.src, m.dst, m.fstype, unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
			return err
		}
	}
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		unix.Dup3(int(f.Fd()), 1, 0)
		unix.Dup3(int(f.Fd()), 2, 0)
		f.Close()
	}
	if f, err := os.Open("/dev/null"); err == nil {
		unix.Dup3(int(f.Fd()), 0, 0)
		f.Close()
	}
	return nil
}

// FindDisks waits up to timeout for a virtio disk with each required
// serial, and up to 100 ms more for the optional ones, and returns the
// device paths of those found, by serial. Disks are probed while their
// driver loads, so by the time the required ones are there the others are
// too.
func FindDisks(required, optional []string, timeout time.Duration) map[string]string {
	found := map[string]string{}
	all := append(append([]string{}, required...), optional...)
	deadline := time.Now().Add(timeout)
	optDeadline := time.Time{}
	for {
		ents, _ := os.ReadDir("/sys/block")
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "serial"))
			if err != nil {
				continue
			}
			serial := strings.TrimSpace(string(b))
			for _, want := range all {
				if serial == want {
					found[want] = "/dev/" + e.Name()
				}
			}
		}
		if len(found) == len(all) || time.Now().After(deadline) {
			return found
		}
		haveRequired := true
		for _, r := range required {
			if _, ok := found[r]; !ok {
				haveRequired = false
			}
		}
		if haveRequired {
			if optDeadline.IsZero() {
				optDeadline = time.Now().Add(100 * time.Millisecond)
			} else if time.Now().After(optDeadline) {
				return found
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// SetupRoot mounts the image's ext4 (serial RootSerial) read-only and the
// scratch disk (ScratchSerial) read-write, joins them with overlayfs, makes
// that the root (MS_MOVE + chroot: an initramfs cannot pivot_root) and
// mounts /proc, /sys, /dev, /dev/pts, /dev/shm, cgroup2, /run and /tmp in
// it.
func SetupRoot(log *slog.Logger) error {
	disks := FindDisks([]string{RootSerial}, []string{ScratchSerial}, 2*time.Second)
	log.Debug("disks", "found", disks)
	root, ok := disks[RootSerial]
	if !ok {
		return fmt.Errorf("no disk with serial %q (the image's root filesystem) in /sys/block", RootSerial)
	}
	for _, d := range []string{lowerDir, scratchDir, newRoot} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	if err := mount(root, lowerDir, "ext4", unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("image root filesystem %s: %w", root, err)
	}
	scratch, ok := disks[ScratchSerial]
	if ok {
		if err := checkExt4(scratch); err != nil {
			return err
		}
		if err := mount(scratch, scratchDir, "ext4", unix.MS_NOATIME, ""); err != nil {
			return fmt.Errorf("scratch disk %s: %w", scratch, err)
		}
		// Kept to remount the scratch disk read-only at power-off, when
		// its mount point is out of reach under the new root.
		if fd, err := unix.Open(scratchDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0); err == nil {
			scratchFD = fd
		}
	} else {
		log.Warn("no scratch disk: writes to the root are kept in memory and lost at power-off", "serial", ScratchSerial)
		if err := mount("tmpfs", scratchDir, "tmpfs", 0, "mode=0755"); err != nil {
			return err
		}
	}
	upper, work := filepath.Join(scratchDir, "upper"), filepath.Join(scratchDir, "work")
	for _, d := range []string{upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return fmt.Errorf("scratch disk: %w", err)
		}
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lowerDir, upper, work)
	if err := mount("overlay", newRoot, "overlay", 0, opts); err != nil {
		return fmt.Errorf("overlay root: %w", err)
	}
	log.Debug("overlay mounted")
	if err := switchRoot(newRoot); err != nil {
		return err
	}
	return mountAPI()
}

// checkExt4 reads the superblock magic so an unformatted scratch disk gets a
// clear error rather than mount's EINVAL.
func checkExt4(dev string) error {
	f, err := os.Open(dev)
	if err != nil {
		return fmt.Errorf("scratch disk: %w", err)
	}
	defer f.Close()
	var magic [2]byte
	if _, err := f.ReadAt(magic[:], 1024+0x38); err != nil && err != io.EOF {
		return fmt.Errorf("scratch disk %s: %w", dev, err)
	}
	if magic != [2]byte{0x53, 0xef} {
		return fmt.Errorf("scratch disk %s (serial %q) holds no ext4 filesystem: the host must format it (mkfs.ext4) before the first boot", dev, ScratchSerial)
	}
	return nil
}

func switchRoot(dir string) error {
	for _, m := range []string{"/proc", "/sys", "/dev"} {
		dst := filepath.Join(dir, m)
		if err := mkdirReplacing(dst); err != nil {
			return fmt.Errorf("switching root: %w", err)
		}
		if err := unix.Mount(m, dst, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("switching root: moving %s: %w", m, err)
		}
	}
	freeInitramfs()
	if err := unix.Chdir(dir); err != nil {
		return fmt.Errorf("switching root: %w", err)
	}
	if err := unix.Mount(dir, "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("switching root: moving %s to /: %w", dir, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("switching root: chroot: %w", err)
	}
	return unix.Chdir("/")
}

// freeInitramfs deletes the initramfs's files (this binary and the kernel
// modules, ~6 MB of guest memory), as switch_root does, without crossing
// into other filesystems. Only on a ramfs or tmpfs root.
func freeInitramfs() {
	var fs unix.Statfs_t
	if unix.Statfs("/", &fs) != nil || (fs.Type != unix.RAMFS_MAGIC && fs.Type != unix.TMPFS_MAGIC) {
		return
	}
	var st unix.Stat_t
	if unix.Lstat("/", &st) != nil {
		return
	}
	removeTree("/", st.Dev)
}

func removeTree(dir string, dev uint64) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if unix.Lstat(p, &st) != nil || st.Dev != dev {
			continue
		}
		if e.IsDir() {
			removeTree(p, dev)
			unix.Rmdir(p)
		} else {
			unix.Unlink(p)
		}
	}
}

// mkdirReplacing makes dir a directory, removing a file or symlink the image
// may have there.
func mkdirReplacing(dir string) error {
	fi, err := os.Lstat(dir)
	if err == nil && !fi.IsDir() {
		os.Remove(dir)
	}
	return os.MkdirAll(dir, 0o755)
}

func mountAPI() error {
	for _, m := range []struct {
		src, dst, fstype string
		flags            uintptr
		data             string
	}{
		{"devpts", "/dev/pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
		{"shm", "/dev/shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"cgroup2", "/sys/fs/cgroup", "cgroup2", unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV, ""},
		{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
		{"tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
	} {
		if err := mkdirReplacing(m.dst); err != nil {
			return err
		}
		if err := mount(m.src, m.dst, m.fstype, m.flags, m.data); err != nil {
			return err
		}
	}
	os.Remove("/dev/ptmx")
	links := [][2]string{
		{"pts/ptmx", "/dev/ptmx"},
		{"/proc/self/fd", "/dev/fd"},
		{"/proc/self/fd/0", "/dev/stdin"},
		{"/proc/self/fd/1", "/dev/stdout"},
		{"/proc/self/fd/2", "/dev/stderr"},
	}
	for _, l := range links {
		if err := os.Symlink(l[0], l[1]); err != nil && !errors.Is(err, os.ErrExist) {
			return err
		}
	}
	return nil
}

func mount(src, dst, fstype string, flags uintptr, data string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(src, dst, fstype, flags, data); err != nil {
		return fmt.Errorf("mounting %s on %s: %w", fstype, dst, err)
	}
	return nil
}

// LoopbackUp brings up the loopback interface; the kernel gives it
// 127.0.0.1 and ::1.
func LoopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("loopback: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback flags: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("loopback up: %w", err)
	}
	return nil
}

// writableExt4Mounts lists the mount points of the read-write ext4
// filesystems (the volumes), in mount order.
func writableExt4Mounts() []string {
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 4 || f[2] != "ext4" || f[1] == "/" || !slices.Contains(strings.Split(f[3], ","), "rw") {
			continue
		}
		out = append(out, unescapeMount(f[1]))
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 for a space...) of a path
// in /proc/mounts.
func unescapeMount(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// scratchFD is the scratch disk's mount point, or -1.
var scratchFD = -1

// Poweroff kills every process, leaves the root and the scratch disk
// read-only (so the scratch disk needs no journal recovery at the next
// boot) and powers the VM off. It does not return.
func Poweroff(log *slog.Logger) {
	unix.Kill(-1, unix.SIGKILL)
	unix.Sync()
	// The killed processes close their files as they exit: retry the
	// remounts for a moment while they are busy.
	remount := func(path string) error {
		var err error
		for i := 0; i < 50; i++ {
			if err = unix.Mount("", path, "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != unix.EBUSY {
				return err
			}
			time.Sleep(10 * time.Millisecond)
		}
		return err
	}
	// Volumes first, the deepest mount first: an ext4 left mounted
	// read-write needs journal recovery, which its next read-only user
	// (`:ro`, a read-only disk) cannot do.
	for _, m := range slices.Backward(writableExt4Mounts()) {
		if err := remount(m); err != nil {
			log.Warn("remounting a volume read-only", "path", m, "err", err)
		}
	}
	if scratchFD >= 0 {
		if err := remount("/"); err != nil {
			log.Warn("remounting the root read-only", "err", err)
		}
		if err := remount(fmt.Sprintf("/proc/self/fd/%d", scratchFD)); err != nil {
			log.Warn("remounting the scratch disk read-only", "err", err)
		}
	}
	unix.Sync()
	log.Info("power off")
	for {
		if err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF); err != nil {
			log.Error("power off", "err", err)
		}
		time.Sleep(time.Second)
	}
}
