package supervisor

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Service logs live in <state dir>/logs/<vm>.log, one line per line the
// service wrote: "<RFC 3339 UTC time with nanoseconds> <stdout|stderr> <text>".
// The supervisor appends to them; `vmcompose logs` reads them, so logs
// survive both the CLI and the supervisor. Beside each log, <vm>.offsets
// records how far into the guest's output streams the log goes, so that a
// restarted supervisor re-attaches where its predecessor stopped.

// LogDir is the folder of the service logs of the project whose state dir
// is dir.
func LogDir(dir string) string { return filepath.Join(dir, "logs") }

// LogPath is the log file of one VM.
func LogPath(dir, vmName string) string { return filepath.Join(LogDir(dir), vmName+".log") }

// LogLine is one line of a service's output.
type LogLine struct {
	Time   time.Time
	Stream string // stdout or stderr
	Text   string
}

// ParseLogLine reads one line of a log file (without its newline).
func ParseLogLine(s string) (LogLine, bool) {
	ts, rest, ok := strings.Cut(s, " ")
	if !ok {
		return LogLine{}, false
	}
	stream, text, _ := strings.Cut(rest, " ")
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return LogLine{}, false
	}
	return LogLine{Time: t, Stream: stream, Text: text}, true
}

// offsets is the <vm>.offsets file: how many bytes of each stream of the
// boot that started at Boot are in the log.
type offsets struct {
	Boot   time.Time        `json:"boot"`
	Offset map[string]int64 `json:"offset"`
}

// serviceLog appends a VM's output to its log file, a line at a time.
type serviceLog struct {
	mu      sync.Mutex
	f       *os.File
	offPath string
	off     offsets
	pos     map[string]int64 // how far into each stream the log has read
	partial map[string][]byte
	now     func() time.Time
}

func openServiceLog(dir, vmName string, now func() time.Time) (*serviceLog, error) {
	if err := os.MkdirAll(LogDir(dir), 0o700); err != nil {
		return nil, fmt.Errorf("log of %s: %w", vmName, err)
	}
	f, err := os.OpenFile(LogPath(dir, vmName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log of %s: %w", vmName, err)
	}
	l := &serviceLog{f: f, offPath: filepath.Join(LogDir(dir), vmName+".offsets"), pos: map[string]int64{}, partial: map[string][]byte{}, now: now}
	if b, err := os.ReadFile(l.offPath); err == nil {
		json.Unmarshal(b, &l.off)
	}
	return l, nil
}

// offset returns where to re-attach the stream of the boot that started at
// boot: where the log ends when it is the boot the log last saw, else 0.
func (l *serviceLog) offset(boot time.Time, stream string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.off.Boot.Equal(boot) {
		l.off = offsets{Boot: boot, Offset: map[string]int64{}}
		l.partial = map[string][]byte{}
	}
	l.pos[stream] = l.off.Offset[stream]
	return l.off.Offset[stream]
}

// writer returns the writer of one stream.
func (l *serviceLog) writer(stream string) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		l.mu.Lock()
		defer l.mu.Unlock()
		buf := append(l.partial[stream], p...)
		var out bytes.Buffer
		ts := l.now().UTC().Format(time.RFC3339Nano)
		for {
			i := bytes.IndexByte(buf, '\n')
			if i < 0 {
				break
			}
			fmt.Fprintf(&out, "%s %s %s\n", ts, stream, bytes.TrimSuffix(buf[:i], []byte("\r")))
			buf = buf[i+1:]
		}
		l.partial[stream] = append([]byte{}, buf...)
		if out.Len() > 0 {
			if _, err := l.f.Write(out.Bytes()); err != nil {
				return 0, err
			}
		}
		// The record says how far the log file goes: a partial line held
		// here is read again by a supervisor that takes over.
		l.pos[stream] += int64(len(p))
		l.record(stream)
		return len(p), nil
	})
}

// flush writes out the partial line of a stream that ended.
func (l *serviceLog) flush(stream string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if p := l.partial[stream]; len(p) > 0 {
		fmt.Fprintf(l.f, "%s %s %s\n", l.now().UTC().Format(time.RFC3339Nano), stream, p)
		l.partial[stream] = nil
		l.record(stream)
	}
}

// record writes where the log file ends in the stream.
func (l *serviceLog) record(stream string) {
	if l.off.Offset == nil {
		l.off.Offset = map[string]int64{}
	}
	l.off.Offset[stream] = l.pos[stream] - int64(len(l.partial[stream]))
	if b, err := json.Marshal(l.off); err == nil {
		// Written in place, once a line: an fsync per line would cost a
		// chatty service dearly, and a torn file reads as no offset.
		os.WriteFile(l.offPath, b, 0o600)
	}
}

func (l *serviceLog) Close() error { return l.f.Close() }

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// ReadLog returns the lines of a VM's log; tail > 0 keeps the last tail
// lines. A missing log is empty. next is the byte offset to follow from.
func ReadLog(dir, vmName string, tail int) (lines []LogLine, next int64, err error) {
	f, err := os.Open(LogPath(dir, vmName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("reading the log of %s: %w", vmName, err)
	}
	defer f.Close()
	r := bufio.NewReader(f)
	for {
		s, err := r.ReadString('\n')
		if !strings.HasSuffix(s, "\n") {
			break // a line still being written: the follower reads it
		}
		next += int64(len(s))
		if l, ok := ParseLogLine(strings.TrimSuffix(s, "\n")); ok {
			lines = append(lines, l)
			if tail > 0 && len(lines) > 2*tail {
				lines = append(lines[:0], lines[len(lines)-tail:]...)
			}
		}
		if err != nil {
			break
		}
	}
	if tail > 0 && len(lines) > tail {
		lines = lines[len(lines)-tail:]
	}
	return lines, next, nil
}

// FollowLog sends the lines appended to a VM's log from byte offset on,
// until ctx ends. A log removed and created again (its VM was recreated)
// is followed from its start.
func FollowLog(ctx context.Context, dir, vmName string, offset int64, send func(LogLine)) error {
	// The log followed stays open, so that the inode of a removed log
	// cannot go to its successor, which would look like the same file.
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	var pending []byte
	read := func() {
		f.Seek(offset, io.SeekStart)
		b, _ := io.ReadAll(f)
		offset += int64(len(b))
		pending = append(pending, b...)
		for {
			i := bytes.IndexByte(pending, '\n')
			if i < 0 {
				break
			}
			if l, ok := ParseLogLine(string(pending[:i])); ok {
				send(l)
			}
			pending = pending[i+1:]
		}
	}
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if f != nil && !sameFile(f, LogPath(dir, vmName)) {
			read() // the old log's last lines
			f.Close()
			f, offset, pending = nil, 0, nil
		}
		if f == nil {
			f, _ = os.Open(LogPath(dir, vmName))
		}
		if f != nil {
			if fi, err := f.Stat(); err == nil && fi.Size() < offset {
				offset, pending = 0, nil // truncated
			}
			read()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sameFile is whether the open f is the file at path now.
func sameFile(f *os.File, path string) bool {
	open, err := f.Stat()
	if err != nil {
		return false
	}
	now, err := os.Stat(path)
	return err == nil && os.SameFile(open, now)
}
