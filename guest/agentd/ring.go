package agentd

import (
	"sync"
)

// ring keeps the last size bytes written to it, addressed by absolute byte
// offsets, and wakes readers when bytes arrive or it is closed.
type ring struct {
	mu      sync.Mutex
	buf     []byte // len size, circular: offset o lives at buf[o%size]
	end     int64  // offset after the last byte written
	closed  bool
	changed chan struct{}
}

func newRing(size int) *ring {
	return &ring{buf: make([]byte, size), changed: make(chan struct{})}
}

func (r *ring) startLocked() int64 { return max(0, r.end-int64(len(r.buf))) }

func (r *ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := len(p)
	if len(p) > len(r.buf) {
		r.end += int64(len(p) - len(r.buf))
		p = p[len(p)-len(r.buf):]
	}
	for len(p) > 0 {
		pos := int(r.end % int64(len(r.buf)))
		c := copy(r.buf[pos:], p)
		p = p[c:]
		r.end += int64(c)
	}
	close(r.changed)
	r.changed = make(chan struct{})
	return n, nil
}

// Close marks the end of the stream: readers get what is left, then EOF.
func (r *ring) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		close(r.changed)
	}
}

// clamp returns off moved into the kept range.
func (r *ring) clamp(off int64) int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return max(r.startLocked(), min(off, r.end))
}

// read copies bytes from offset off into p. It returns at once; with
// nothing to copy it returns a channel that is closed when that changes,
// and eof when the ring is closed and off is at its end. When off was
// dropped already, the copy starts at the oldest kept byte: next says where
// the copied bytes end.
func (r *ring) read(off int64, p []byte) (n int, next int64, wait <-chan struct{}, eof bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	off = max(off, r.startLocked())
	if off >= r.end {
		return 0, off, r.changed, r.closed
	}
	pos := int(off % int64(len(r.buf)))
	avail := int(min(r.end-off, int64(len(r.buf)-pos)))
	n = copy(p, r.buf[pos:pos+avail])
	return n, off + int64(n), nil, false
}
