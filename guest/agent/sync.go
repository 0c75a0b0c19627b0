package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"
)

// SyncSpec is the header of a sync: where the entries go and who owns
// what they write.
type SyncSpec struct {
	// Target is the absolute directory in the guest the entries' paths
	// are relative to; it is made when missing. A target in SecretsDir is
	// refused.
	Target string `json:"target"`
	// User owns what is written, in compose's `user:` syntax, resolved in
	// the guest as the service's user is; empty means the service's user,
	// then the image's, then root.
	User string `json:"user,omitempty"`
	// Fsync makes the guest fsync each file before its rename, so that it
	// survives a crash of the guest; without it a file is whole or absent
	// to the service, but may be lost at a crash (a dev loop syncs again).
	Fsync bool `json:"fsync,omitempty"`
}

// Sync entry operations.
const (
	SyncFile    = "file"    // a regular file: Mode, Size, then Size bytes
	SyncDir     = "dir"     // a directory: Mode
	SyncSymlink = "symlink" // a symbolic link: Link
	SyncDelete  = "delete"  // a file, a link or a whole directory tree
	SyncChmod   = "chmod"   // the mode of what is there: Mode
	syncEnd     = "end"     // the end of the batch
)

// SyncEntry is one change of a sync batch. On the wire it is a header
// (WriteHeader) followed, for a file, by exactly Size bytes.
type SyncEntry struct {
	Op string `json:"op"`
	// Path is relative to the target, with slashes; it may not leave it.
	Path string `json:"path,omitempty"`
	// Mode is the permission bits (with setuid, setgid and sticky).
	Mode uint32 `json:"mode,omitempty"`
	Size int64  `json:"size,omitempty"`
	Link string `json:"link,omitempty"`
	// Open gives a file's content, exactly Size bytes; it is called when
	// the entry is sent, so that a batch is never held in memory.
	Open func() (io.ReadCloser, error) `json:"-"`
}

// SyncMode is a host file's permission bits as a SyncEntry carries them,
// as chmod(2) takes them: Go keeps setuid, setgid and sticky apart from
// the low bits.
func SyncMode(m fs.FileMode) uint32 {
	u := uint32(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// SyncResult is the guest's answer to a sync.
type SyncResult struct {
	Written int   `json:"written"` // files, directories and links made
	Deleted int   `json:"deleted"`
	Bytes   int64 `json:"bytes"` // of file content written
	// Skipped are the entries not applied, with why.
	Skipped []SyncSkip `json:"skipped,omitempty"`
}

// SyncSkip is an entry the guest did not apply.
type SyncSkip struct {
	Path   string `json:"path"`
	Reason string `json:"reason"`
}

// CheckSyncTarget refuses a target the guest refuses too: relative, or in
// SecretsDir, where the secrets live.
func CheckSyncTarget(target string) error {
	if !path.IsAbs(target) {
		return fmt.Errorf("%w: sync target %q is not an absolute path", ErrInvalid, target)
	}
	if t := path.Clean(target); t == SecretsDir || strings.HasPrefix(t, SecretsDir+"/") {
		return fmt.Errorf("%w: sync target %q is in %s, where the secrets are: sync elsewhere", ErrInvalid, target, SecretsDir)
	}
	return nil
}

// Sync applies a batch of entries under spec.Target in the guest, in
// order, in one stream: each file is written to a temporary file beside
// its path and renamed over it, with missing parents made as directories
// of the user. An entry that would leave the target (a ".." or a symlink
// in the guest) is skipped, and said so in the result; a target that
// cannot be written is an error. Contents are read from each entry's Open
// as they are sent; a file that cannot be opened (gone from the host
// meanwhile) is not sent, and is among the skipped.
func (c *Client) Sync(ctx context.Context, spec SyncSpec, entries []SyncEntry) (SyncResult, error) {
	pr, pw := io.Pipe()
	local := make(chan []SyncSkip, 1)
	go func() {
		skipped, err := WriteSyncEntries(pw, entries)
		pw.CloseWithError(err)
		local <- skipped
	}()
	defer pr.Close()
	res, err := c.SyncStream(ctx, spec, pr)
	if err != nil {
		return res, err
	}
	// The guest answered after the end marker: the writer is done.
	res.Skipped = append(<-local, res.Skipped...)
	return res, nil
}

// WriteSyncEntries writes entries and the end marker in the wire format
// of a sync stream. The files it could not open are skipped and returned.
func WriteSyncEntries(w io.Writer, entries []SyncEntry) (skipped []SyncSkip, err error) {
	for _, e := range entries {
		r, err := openEntry(e)
		if err != nil {
			skipped = append(skipped, SyncSkip{Path: e.Path, Reason: "on the host: " + err.Error()})
			continue
		}
		err = writeSyncEntry(w, e, r)
		if r != nil {
			r.Close()
		}
		if err != nil {
			return skipped, err
		}
	}
	return skipped, WriteHeader(w, SyncEntry{Op: syncEnd})
}

func openEntry(e SyncEntry) (io.ReadCloser, error) {
	if e.Op != SyncFile {
		return nil, nil
	}
	if e.Open == nil {
		return nil, errors.New("no content")
	}
	return e.Open()
}

// writeSyncEntry writes one entry and, for a file, its content from r.
func writeSyncEntry(w io.Writer, e SyncEntry, r io.Reader) error {
	if e.Op != SyncFile {
		e.Size = 0
		return WriteHeader(w, e)
	}
	if err := WriteHeader(w, e); err != nil {
		return err
	}
	n, err := io.CopyN(w, r, e.Size)
	if err == io.EOF {
		// The guest waits for the bytes announced: the batch cannot go on.
		err = fmt.Errorf("sync %s: %d bytes, %d announced (it changed while sent)", e.Path, n, e.Size)
	}
	return err
}

// SyncStream is Sync with the entries already encoded (WriteSyncEntries)
// in r: the supervisor forwards the CLI's stream as it comes. It writes r
// to the guest while it waits for the answer, which the guest sends once
// it read the end marker (or at once, for a target it refuses).
func (c *Client) SyncStream(ctx context.Context, spec SyncSpec, r io.Reader) (SyncResult, error) {
	if err := CheckSyncTarget(spec.Target); err != nil {
		return SyncResult{}, err
	}
	s, err := c.session.Open()
	if err != nil {
		return SyncResult{}, fmt.Errorf("agent sync: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { abort(s) })
	defer stop()
	sent := make(chan error, 1)
	go func() {
		err := WriteHeader(s, Request{Op: opSync, Sync: &spec})
		if err == nil {
			_, err = io.Copy(s, r)
		}
		if err != nil {
			abort(s) // the guest waits for entries that will not come
		} else {
			// Half-closed: a guest still waiting for the end marker
			// (r ended early: the CLI went away) reads EOF and gives up.
			s.Close()
		}
		sent <- err
	}()
	var resp Response
	err = ReadHeader(s, &resp)
	// The answer ends the stream: a writer still blocked (the guest
	// refused the target and reads no more) is cut off. It is not waited
	// for: r may be a connection that only its owner closes.
	abort(s)
	if ctx.Err() != nil {
		return SyncResult{}, fmt.Errorf("agent sync: %w", ctx.Err())
	}
	if err != nil {
		select {
		case werr := <-sent:
			if werr != nil {
				return SyncResult{}, fmt.Errorf("agent sync: %w", werr)
			}
		case <-time.After(100 * time.Millisecond):
			// A writer that failed aborted the stream first, and says
			// so at once; one still reading r did not.
		}
		return SyncResult{}, fmt.Errorf("agent sync: %w", noEOF(err))
	}
	if err := resp.err(); err != nil {
		return SyncResult{}, fmt.Errorf("agent sync: %w", err)
	}
	if resp.Sync == nil {
		return SyncResult{}, errors.New("agent sync: answer without a result")
	}
	return *resp.Sync, nil
}

// ReadSyncEntry reads one entry header of a sync stream; end reports the
// end marker. A file's Size bytes follow on r.
func ReadSyncEntry(r io.Reader) (e SyncEntry, end bool, err error) {
	if err := ReadHeader(r, &e); err != nil {
		return e, false, noEOF(err)
	}
	if e.Size < 0 {
		return e, false, fmt.Errorf("sync %s: size %d", e.Path, e.Size)
	}
	return e, e.Op == syncEnd, nil
}

// Restart restarts the service process in place: it stops it as
// Shutdown does (the stop signal, SIGKILL to every process after the grace
// period) and starts it again from the same spec, with its mounts and
// files as they are; the guest does not reboot and Wait does not return.
// It returns the new process's pid. ErrNotStarted before Start, ErrExited
// once the service exited; an error starting it again (the command was
// deleted) makes that the service's exit.
func (c *Client) Restart(ctx context.Context) (int, error) {
	var resp Response
	if err := c.roundTrip(ctx, Request{Op: opRestart}, &resp); err != nil {
		return 0, err
	}
	return resp.Pid, nil
}
