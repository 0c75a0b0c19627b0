package agentd

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/guest/agent"
)

// handleSync applies a batch of sync entries under the request's target.
// Every path is resolved with openat2(RESOLVE_BENEATH) from the target's
// descriptor: vminit runs as root, and the guest's files (symlinks
// included) are the image's, so nothing is followed out of the target.
func (s *Server) handleSync(st net.Conn, spec *agent.SyncSpec) error {
	begin := time.Now()
	a, err := s.syncApplier(spec)
	if err != nil {
		return s.reply(st, errResponse(err))
	}
	defer unix.Close(a.root)
	entries := 0
	for {
		e, end, err := agent.ReadSyncEntry(st)
		if err != nil {
			return fmt.Errorf("sync stream: %w", err)
		}
		if end {
			break
		}
		entries++
		if err := a.apply(e, st); err != nil {
			return err // the stream broke
		}
	}
	r := a.res
	s.log.Info("sync applied", "target", spec.Target, "entries", entries, "written", r.Written, "deleted", r.Deleted,
		"bytes", r.Bytes, "skipped", len(r.Skipped), "took", time.Since(begin).Round(time.Millisecond))
	return s.reply(st, agent.Response{Sync: &r})
}

// syncApplier checks the target and the user, and opens the target (made
// when missing).
func (s *Server) syncApplier(spec *agent.SyncSpec) (*syncApplier, error) {
	if spec == nil {
		return nil, fmt.Errorf("%w: sync without its target", agent.ErrInvalid)
	}
	if err := agent.CheckSyncTarget(spec.Target); err != nil {
		return nil, err
	}
	s.mu.Lock()
	phase := s.phase
	s.mu.Unlock()
	switch phase {
	case agent.PhaseTemplate, agent.PhaseBooting, agent.PhaseFailed:
		return nil, fmt.Errorf("%w: sync while the guest's root is not ready (%s)", agent.ErrInvalid, phase)
	}
	svc := s.serviceSpec()
	user := spec.User
	if user == "" {
		user = svc.User
	}
	if user == "" {
		user = svc.Image.User
	}
	u, err := lookupUser(user, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: sync user: %v", agent.ErrInvalid, err)
	}
	target := filepath.Clean(spec.Target)
	if err := os.MkdirAll(target, 0o755); err != nil {
		return nil, fmt.Errorf("%w: sync target %s: %v", agent.ErrInvalid, target, err)
	}
	root, err := unix.Open(target, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: sync target %s: %v", agent.ErrInvalid, target, err)
	}
	// The target's own symlinks are the service's view and are followed;
	// where they lead must still not be the secrets.
	real, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", root))
	if err == nil {
		err = agent.CheckSyncTarget(real)
	}
	if err == nil && unix.Access(real, unix.W_OK) != nil {
		err = fmt.Errorf("%w: sync target %s is not writable (a read-only volume or root file system)", agent.ErrInvalid, target)
	}
	if err != nil {
		unix.Close(root)
		return nil, err
	}
	return &syncApplier{root: root, uid: int(u.Uid), gid: int(u.Gid), fsync: spec.Fsync}, nil
}

// syncApplier applies entries under the directory root.
type syncApplier struct {
	root     int
	uid, gid int
	fsync    bool
	res      agent.SyncResult
}

// streamError is a failure to read the sync stream, which ends the
// request; any other error of an entry skips it.
type streamError struct{ error }

// apply applies one entry; a file's content is read from r whatever
// happens to it. It returns an error only when the stream broke.
func (a *syncApplier) apply(e agent.SyncEntry, r io.Reader) error {
	content := &streamReader{r: io.LimitReader(r, e.Size)}
	err := a.applyEntry(e, content)
	if e.Op == agent.SyncFile {
		if _, cerr := io.Copy(io.Discard, content); cerr != nil || content.n < e.Size {
			return fmt.Errorf("sync %s: the stream ended after %d of %d bytes (%v)", e.Path, content.n, e.Size, content.err)
		}
	}
	var se streamError
	if errors.As(err, &se) {
		return se.error
	}
	if err != nil {
		a.res.Skipped = append(a.res.Skipped, agent.SyncSkip{Path: e.Path, Reason: reason(err)})
	}
	return nil
}

// streamReader counts what it read and keeps the first read error, so
// that a file's write error is told from a broken stream.
type streamReader struct {
	r   io.Reader
	n   int64
	err error
}

func (s *streamReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.n += int64(n)
	if err != nil && err != io.EOF && s.err == nil {
		s.err = err
	}
	return n, err
}

func reason(err error) string {
	switch {
	case errors.Is(err, unix.EXDEV):
		return "it would leave the target through a symlink in the guest: refused"
	case errors.Is(err, unix.ELOOP):
		return "a symlink is in the way: refused"
	}
	return err.Error()
}

func (a *syncApplier) applyEntry(e agent.SyncEntry, content *streamReader) error {
	rel, err := syncPath(e.Path, e.Op == agent.SyncDir || e.Op == agent.SyncChmod)
	if err != nil {
		return err
	}
	switch e.Op {
	case agent.SyncFile:
		return a.writeFile(rel, e, content)
	case agent.SyncDir:
		return a.mkdir(rel, e.Mode)
	case agent.SyncSymlink:
		return a.symlink(rel, e.Link)
	case agent.SyncDelete:
		return a.delete(rel)
	case agent.SyncChmod:
		return a.chmod(rel, e.Mode)
	}
	return fmt.Errorf("unknown operation %q", e.Op)
}

// syncPath checks a relative path: no "..", nothing absolute; "." (the
// target itself) only where allowed.
func syncPath(p string, rootOK bool) (string, error) {
	if p == "" || strings.HasPrefix(p, "/") {
		return "", errors.New("not a relative path")
	}
	for _, c := range strings.Split(p, "/") {
		if c == ".." {
			return "", errors.New("a .. would leave the target: refused")
		}
	}
	c := path.Clean(p)
	if c == "." && !rootOK {
		return "", errors.New("the target itself")
	}
	return c, nil
}

func (a *syncApplier) open(rel string, flags int) (int, error) {
	return unix.Openat2(a.root, rel, &unix.OpenHow{
		Flags:   uint64(flags | unix.O_CLOEXEC),
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_MAGICLINKS,
	})
}

// dirs opens the directory rel beneath the target, making the missing
// ones (mode 0755, the user's).
func (a *syncApplier) dirs(rel string) (int, error) {
	if rel == "." || rel == "" {
		return unix.Dup(a.root)
	}
	if fd, err := a.open(rel, unix.O_DIRECTORY|unix.O_RDONLY); !errors.Is(err, unix.ENOENT) {
		return fd, err
	}
	parent, err := unix.Dup(a.root)
	if err != nil {
		return -1, err
	}
	comps := strings.Split(rel, "/")
	for i, c := range comps {
		prefix := strings.Join(comps[:i+1], "/")
		fd, err := a.open(prefix, unix.O_DIRECTORY|unix.O_RDONLY)
		if errors.Is(err, unix.ENOENT) {
			if err = unix.Mkdirat(parent, c, 0o755); err == nil {
				err = unix.Fchownat(parent, c, a.uid, a.gid, unix.AT_SYMLINK_NOFOLLOW)
			}
			if err == nil || errors.Is(err, unix.EEXIST) {
				fd, err = a.open(prefix, unix.O_DIRECTORY|unix.O_RDONLY)
			}
		}
		unix.Close(parent)
		if err != nil {
			return -1, fmt.Errorf("directory %s: %w", prefix, err)
		}
		parent = fd
	}
	return parent, nil
}

// parent opens rel's directory (made when missing with create) and
// returns rel's last name.
func (a *syncApplier) parent(rel string, create bool) (int, string, error) {
	dir, name := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if create {
		fd, err := a.dirs(dir)
		return fd, name, err
	}
	if dir == "" {
		fd, err := unix.Dup(a.root)
		return fd, name, err
	}
	fd, err := a.open(dir, unix.O_DIRECTORY|unix.O_RDONLY)
	return fd, name, err
}

func tempName(name string) string {
	var b [6]byte
	rand.Read(b[:])
	return "." + name + ".vmsync-" + hex.EncodeToString(b[:])
}

// writeFile writes a temporary file beside rel, the user's, with the
// entry's mode, and renames it over rel: the service never reads half a
// file.
func (a *syncApplier) writeFile(rel string, e agent.SyncEntry, content *streamReader) error {
	dfd, name, err := a.parent(rel, true)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	tmp := tempName(name)
	fd, err := unix.Openat(dfd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), tmp)
	n, err := io.Copy(f, content)
	if content.err != nil {
		err = streamError{content.err}
	} else if err == nil && n < e.Size {
		err = streamError{fmt.Errorf("sync %s: the stream ended after %d of %d bytes", e.Path, n, e.Size)}
	}
	if err == nil {
		err = f.Chown(a.uid, a.gid)
	}
	if err == nil {
		// After the chown, which clears setuid and setgid.
		err = unix.Fchmod(fd, e.Mode&0o7777)
	}
	if err == nil && a.fsync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(dfd, tmp, dfd, name)
	}
	if err != nil {
		unix.Unlinkat(dfd, tmp, 0)
		return err
	}
	a.res.Written++
	a.res.Bytes += n
	return nil
}

func (a *syncApplier) mkdir(rel string, mode uint32) error {
	fd, err := a.dirs(rel)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, mode&0o7777); err != nil {
		return err
	}
	a.res.Written++
	return nil
}

// symlink makes rel a symlink to link, replacing what is there but a
// directory. Where it points is not checked: it is the guest's to follow,
// and later entries are not resolved through it out of the target.
func (a *syncApplier) symlink(rel, link string) error {
	dfd, name, err := a.parent(rel, true)
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	tmp := tempName(name)
	if err := unix.Symlinkat(link, dfd, tmp); err != nil {
		return err
	}
	err = unix.Fchownat(dfd, tmp, a.uid, a.gid, unix.AT_SYMLINK_NOFOLLOW)
	if err == nil {
		err = unix.Renameat(dfd, tmp, dfd, name)
	}
	if err != nil {
		unix.Unlinkat(dfd, tmp, 0)
		return err
	}
	a.res.Written++
	return nil
}

// delete removes rel, a whole tree when it is a directory; what is
// already gone is no error.
func (a *syncApplier) delete(rel string) error {
	dfd, name, err := a.parent(rel, false)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	defer unix.Close(dfd)
	err = unix.Unlinkat(dfd, name, 0)
	if errors.Is(err, unix.EISDIR) {
		if err = removeTree(dfd, name); err == nil {
			err = unix.Unlinkat(dfd, name, unix.AT_REMOVEDIR)
		}
	}
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	a.res.Deleted++
	return nil
}

// removeTree empties the directory name of dfd, never following a
// symlink nor entering a mount point (a volume under the target keeps
// its data).
func removeTree(dfd int, name string) error {
	fd, err := unix.Openat(dfd, name, unix.O_DIRECTORY|unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BASIC_STATS, &stx); err == nil &&
		stx.Attributes_mask&unix.STATX_ATTR_MOUNT_ROOT != 0 && stx.Attributes&unix.STATX_ATTR_MOUNT_ROOT != 0 {
		unix.Close(fd)
		return fmt.Errorf("%s is a mount point: not deleted", name)
	}
	d := os.NewFile(uintptr(fd), name)
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return err
	}
	for _, n := range names {
		err := unix.Unlinkat(fd, n, 0)
		if errors.Is(err, unix.EISDIR) {
			if err = removeTree(fd, n); err == nil {
				err = unix.Unlinkat(fd, n, unix.AT_REMOVEDIR)
			}
		}
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("%s/%s: %w", name, n, err)
		}
	}
	return nil
}

// chmod sets the mode of what is at rel; a symlink has none of its own.
func (a *syncApplier) chmod(rel string, mode uint32) error {
	fd, err := a.open(rel, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Fchmod(fd, mode&0o7777); err != nil {
		return err
	}
	a.res.Written++
	return nil
}
