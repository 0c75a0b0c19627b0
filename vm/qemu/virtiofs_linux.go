//go:build linux

package qemu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/vm"
)

// DefaultVirtiofsd is QEMU's own virtiofs daemon, the C one that Debian 12
// ships in qemu-system-common. It needs root.
const DefaultVirtiofsd = "/usr/lib/qemu/virtiofsd"

// File names of the shares in a VM directory.
const (
	sharesDir    = "shares"        // shares/<i>: the root each daemon serves
	virtiofsdLog = "virtiofsd.log" // the daemons' stderr, of the last start
)

// shareSock is the vhost-user socket of share i, relative to the VM
// directory.
func shareSock(i int) string { return shareSockPrefix + strconv.Itoa(i) + ".sock" }

const shareSockPrefix = "virtiofs-"

// shareRoot is the directory the daemon of share i serves: the share's
// source is mounted on it, in the daemons' own mount namespace only.
func shareRoot(dir string, i int) string {
	return filepath.Join(dir, sharesDir, strconv.Itoa(i))
}

// virtiofsdGrace bounds the wait for a VM's daemons to end by
// themselves once its qemu has ended (they do when qemu closes their
// connection) before they are killed.
const virtiofsdGrace = 2 * time.Second

// virtiofsdArgs are the arguments of the daemon serving root on the
// listening socket it inherits as fd 3.
//
//   - cache=auto with timeout=0: the guest keeps a file's data cached only
//     while the file is open (it drops it at every open) and asks the host
//     for attributes and names every time. Dev loops edit files on the
//     host, and the next open or stat in the guest sees the edit at once;
//     with the default 1 s timeout a file that grew on the host could read
//     short for up to a second. cache=none would be as fresh, but its
//     direct I/O refuses shared mmap (SQLite, for one).
//   - writes are not cached in the guest (no writeback): they reach the
//     host file at write(2).
//   - sandbox=namespace: the daemon pivots into the share's root in mount,
//     pid and net namespaces of its own, so a symlink made by the guest
//     cannot lead it out of the share.
//   - no xattr (the default, said explicitly): the guest, root in its VM,
//     must not set security.capability or other privileged attributes on
//     the host's files.
//   - with Locks, flock and posix_lock: flock(2) and fcntl(2) locks are
//     taken on the host's file, where the daemons of other VMs sharing it
//     see them. This daemon cannot make a guest wait for a lock: a
//     blocking flock or F_SETLKW fails with EOPNOTSUPP, even on a free
//     lock, which is why shares without Locks keep the guest's own locks.
//
// The source is always a path in the VM directory (see stage), so no
// user path reaches the daemon's comma-separated option list.
func virtiofsdArgs(root string, locks bool) []string {
	a := []string{
		"--fd=3",
		"-o", "source=" + escapeOpt(root),
		"-o", "cache=auto",
		"-o", "timeout=0",
		"-o", "sandbox=namespace",
		"-o", "no_xattr",
	}
	if locks {
		a = append(a, "-o", "flock", "-o", "posix_lock")
	}
	return a
}

// escapeOpt escapes a value for a FUSE option list, where ',' separates
// options and '\' escapes the next character.
func escapeOpt(s string) string {
	return strings.NewReplacer(`\`, `\\`, `,`, `\,`).Replace(s)
}

// checkShares checks what serving spec's shares needs before anything
// starts: root, the daemon, and sources that exist.
func (d *Driver) checkShares(spec vm.Spec) error {
	if len(spec.Shares) == 0 {
		return nil
	}
	first := spec.Shares[0]
	if os.Geteuid() != 0 {
		return fmt.Errorf("share %s (%s): QEMU's virtiofsd needs root: run as root, or use a disk instead of a share", first.Tag, first.Source)
	}
	if _, err := os.Stat(d.o.virtiofsd); err != nil {
		return fmt.Errorf("share %s (%s): %w (install qemu-system-common, or set the daemon with qemu.WithVirtiofsd)", first.Tag, first.Source, err)
	}
	for _, sh := range spec.Shares {
		fi, err := os.Stat(sh.Source)
		if err != nil {
			return fmt.Errorf("share %s: %w", sh.Tag, err)
		}
		if !fi.IsDir() && !fi.Mode().IsRegular() {
			return fmt.Errorf("share %s: %s is neither a directory nor a regular file", sh.Tag, sh.Source)
		}
	}
	return nil
}

// startDaemons starts one virtiofsd per share of spec and returns once
// they run. Each inherits a listening socket made here, so qemu may
// connect at once; a daemon serves one connection and exits when it
// closes, that is when qemu ends.
//
// The daemons are forked by a goroutine locked to a thread that has left
// the host's mount namespace for one of its own, where the shares are
// mounted in the VM directory (see stage): the host never sees those
// mounts, and they vanish with the daemons. Go ends the thread when the
// goroutine returns, since it is never unlocked; the goroutine waits for
// the daemons first, as PR_SET_PDEATHSIG (DieWithController) fires when
// the forking thread ends.
func (d *Driver) startDaemons(dir string, spec vm.Spec, logf *os.File) error {
	socks := make([]*os.File, len(spec.Shares))
	defer func() {
		for _, f := range socks {
			if f != nil {
				f.Close()
			}
		}
	}()
	for i, sh := range spec.Shares {
		f, err := listenUnix(filepath.Join(dir, shareSock(i)))
		if err != nil {
			return fmt.Errorf("share %s: %w", sh.Tag, err)
		}
		socks[i] = f
	}
	res := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			res <- fmt.Errorf("shares: a mount namespace for virtiofsd: %w", err)
			return
		}
		// Mounts of the host still reach us; ours never reach the host.
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
			res <- fmt.Errorf("shares: a mount namespace for virtiofsd: %w", err)
			return
		}
		var cmds []*exec.Cmd
		fail := func(err error) {
			for _, c := range cmds {
				c.Process.Kill()
				c.Wait()
			}
			res <- err
		}
		for i, sh := range spec.Shares {
			root := shareRoot(dir, i)
			if err := stage(root, sh); err != nil {
				fail(fmt.Errorf("share %s: %w", sh.Tag, err))
				return
			}
			cmd := exec.Command(d.o.virtiofsd, virtiofsdArgs(root, sh.Locks)...)
			cmd.Dir = dir
			cmd.Stdout, cmd.Stderr = logf, logf
			cmd.ExtraFiles = []*os.File{socks[i]}
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			if spec.DieWithController {
				cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
			}
			if err := cmd.Start(); err != nil {
				fail(fmt.Errorf("share %s: starting virtiofsd: %w", sh.Tag, err))
				return
			}
			cmds = append(cmds, cmd)
		}
		res <- nil
		for _, c := range cmds {
			c.Wait()
		}
	}()
	return <-res
}

// stage mounts share sh on root, in the calling thread's mount namespace,
// for its daemon to serve. A directory is bound there. A file is bound
// onto an empty file of its name in root, which is then made read-only
// itself, so that the guest sees that one file and can add nothing beside
// it. A read-only share is made read-only here, where the guest cannot
// undo it.
func stage(root string, sh vm.Share) error {
	fi, err := os.Stat(sh.Source)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	if fi.IsDir() {
		if err := unix.Mount(sh.Source, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("binding %s: %w", sh.Source, err)
		}
		if sh.ReadOnly {
			return readOnly(root, true)
		}
		return nil
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is neither a directory nor a regular file", sh.Source)
	}
	file := filepath.Join(root, filepath.Base(sh.Source))
	f, err := os.OpenFile(file, os.O_RDONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	f.Close()
	if err := unix.Mount(sh.Source, file, "", unix.MS_BIND, ""); err != nil {
		return fmt.Errorf("binding %s: %w", sh.Source, err)
	}
	if sh.ReadOnly {
		if err := readOnly(file, false); err != nil {
			return err
		}
	}
	if err := unix.Mount(root, root, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("binding %s: %w", root, err)
	}
	return readOnly(root, false)
}

// readOnly makes the mount at path read-only, with the mounts below it
// when recursive (and the kernel has mount_setattr, 5.12 and later).
func readOnly(path string, recursive bool) error {
	var flags uint
	if recursive {
		flags = unix.AT_RECURSIVE
	}
	err := unix.MountSetattr(unix.AT_FDCWD, path, flags, &unix.MountAttr{Attr_set: unix.MOUNT_ATTR_RDONLY})
	if errors.Is(err, unix.ENOSYS) {
		err = unix.Mount("", path, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, "")
	}
	if err != nil {
		return fmt.Errorf("making %s read-only: %w", path, err)
	}
	return nil
}

// listenUnix makes a listening unix socket at path (replacing a stale
// one) and returns it as a file to hand to a child. A path too long for
// sockaddr_un is bound through /proc/self/fd/<dirfd>/<base>.
func listenUnix(path string) (*os.File, error) {
	os.Remove(path)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	addr := path
	if len(path) >= 100 {
		dir, err := os.Open(filepath.Dir(path))
		if err != nil {
			unix.Close(fd)
			return nil, err
		}
		defer dir.Close()
		addr = fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path))
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: addr}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	if err := unix.Listen(fd, 1); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("listening on %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// daemon is a virtiofsd process found in /proc.
type daemon struct {
	pid   int
	start uint64
	root  string // the share root it serves
}

// findDaemons returns the live virtiofsd processes serving a share root
// under prefix (a VM directory, or the state root, with a trailing
// slash), found by their command line (the daemon, then a source=
// argument under prefix): those of a Start that died before it could
// record them included, and the sandboxed child each daemon forks.
func (d *Driver) findDaemons(prefix string) []daemon {
	want := "source=" + escapeOpt(prefix)
	ents, _ := os.ReadDir("/proc")
	var out []daemon
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !strings.HasPrefix(string(b), d.o.virtiofsd+"\x00") || !strings.Contains(string(b), want) {
			continue
		}
		for arg := range strings.SplitSeq(string(b), "\x00") {
			src, ok := strings.CutPrefix(arg, "source=")
			if !ok || !strings.HasPrefix(arg, want) {
				continue
			}
			start, zombie, err := procStart(pid)
			if err == nil && !zombie {
				out = append(out, daemon{pid: pid, start: start, root: src})
			}
			break
		}
	}
	return out
}

// reapDaemons ends the virtiofsd processes of the VM in dir that started
// no later than notAfter (a /proc start time; 0 for all): it waits up to
// grace for them to end by themselves, kills those left and returns once
// they are gone. notAfter keeps the daemons of a later start of the VM,
// begun by another process, out of reach.
func (d *Driver) reapDaemons(dir string, notAfter uint64, grace time.Duration) {
	mine := func() []daemon {
		var out []daemon
		for _, p := range d.findDaemons(dir + "/" + sharesDir + "/") {
			if notAfter == 0 || p.start <= notAfter {
				out = append(out, p)
			}
		}
		return out
	}
	deadline := time.Now().Add(grace)
	for {
		left := mine()
		if len(left) == 0 {
			return
		}
		now := time.Now()
		if now.After(deadline.Add(5 * time.Second)) {
			return // unkillable: nothing more to do
		}
		if now.After(deadline) {
			for _, p := range left {
				killPid(p.pid, p.start, unix.SIGKILL)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// reapOrphanDaemons ends the daemons of VMs under the root whose qemu
// does not run: those of a Start that died between starting them and
// starting qemu, which would wait for a connection for ever. A VM being
// started (its lock taken) is left alone, and an adopted VM keeps its
// daemons.
func (d *Driver) reapOrphanDaemons() {
	names := map[string]bool{}
	prefix := escapeOpt(d.root + "/")
	for _, p := range d.findDaemons(d.root + "/") {
		rel, _ := strings.CutPrefix(p.root, prefix)
		if name, _, ok := strings.Cut(rel, "/"); ok && validName(name) {
			names[name] = true
		}
	}
	for name := range names {
		unlock, err := d.tryLock(name)
		if err != nil {
			continue
		}
		if _, running, err := d.current(name); err == nil && !running {
			d.o.log.Warn("ending the virtiofsd of a VM that does not run", "vm", name)
			d.reapDaemons(d.dir(name), 0, 0)
		}
		unlock()
	}
}
