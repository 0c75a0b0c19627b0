package agentd

import (
	"sync"
)

// ring keeps the last size bytes written to it, addressed by absolute byte
// offsets, and wakes readers when bytes arrive or it is closed.
//
// Readers that attach are waited for: a write that would drop bytes an
// attached reader has not read yet blocks until it has (so the service
// blocks on its pipe, as with docker's default blocking log mode). Without
// attached readers the oldest bytes are dropped.
type ring struct {
	mu       sync.Mutex
	buf      []byte // len size, circular: offset o lives at buf[o%size]
	end      int64  // offset after the last byte written
	closed   bool
	changed  chan struct{} // closed and replaced when bytes arrive or at Close
	readers  map[int]int64 // attached reader -> first offset it still needs
	nextID   int
	advanced chan struct{} // closed and replaced when a reader moves on or leaves
}

func newRing(size int) *ring {
	return &ring{
		buf:      make([]byte, size),
		changed:  make(chan struct{}),
		readers:  map[int]int64{},
		advanced: make(chan struct{}),
	}
}

func (r *ring) startLocked() int64 { return max(0, r.end-int64(len(r.buf))) }

// Write stores p, waiting for attached readers when it would overwrite
// bytes they still need. After Close it discards.
func (r *ring) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		chunk := p[:min(len(p), len(r.buf))]
		r.mu.Lock()
		for !r.closed && r.laggingLocked(len(chunk)) {
			wait := r.advanced
			r.mu.Unlock()
			<-wait
			r.mu.Lock()
		}
		if r.closed {
			r.mu.Unlock()
			return n, nil
		}
		for c := chunk; len(c) > 0; {
			pos := int(r.end % int64(len(r.buf)))
			k := copy(r.buf[pos:], c)
			c = c[k:]
			r.end += int64(k)
		}
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
		p = p[len(chunk):]
	}
	return n, nil
}

// written returns how many bytes were ever written.
func (r *ring) written() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.end
}

// laggingLocked reports whether writing n bytes would drop bytes an
// attached reader still needs.
func (r *ring) laggingLocked(n int) bool {
	newStart := r.end + int64(n) - int64(len(r.buf))
	for _, off := range r.readers {
		if off < newStart {
			return true
		}
	}
	return false
}

// Close marks the end of the stream: readers get what is left, then EOF;
// blocked writers return.
func (r *ring) Close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		r.closed = true
		close(r.changed)
		close(r.advanced)
		r.advanced = make(chan struct{})
	}
}

// attach registers a reader from offset off, moved into the kept range, and
// returns its id and the offset it starts at.
func (r *ring) attach(off int64) (id int, start int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	start = max(r.startLocked(), min(off, r.end))
	r.nextID++
	r.readers[r.nextID] = start
	return r.nextID, start
}

// detach unregisters a reader; writers stop waiting for it.
func (r *ring) detach(id int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.readers, id)
	r.wakeWritersLocked()
}

func (r *ring) wakeWritersLocked() {
	close(r.advanced)
	r.advanced = make(chan struct{})
}

// read copies bytes from offset off into p for reader id (0 for one that
// is not attached). It returns at once; with nothing to copy it returns a
// channel that is closed when that changes, and eof when the ring is
// closed and off is at its end. When off was dropped already, the copy
// starts at the oldest kept byte: next says where the copied bytes end.
func (r *ring) read(id int, off int64, p []byte) (n int, next int64, wait <-chan struct{}, eof bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	off = max(off, r.startLocked())
	if off >= r.end {
		return 0, off, r.changed, r.closed
	}
	pos := int(off % int64(len(r.buf)))
	avail := int(min(r.end-off, int64(len(r.buf)-pos)))
	n = copy(p, r.buf[pos:pos+avail])
	next = off + int64(n)
	if _, ok := r.readers[id]; ok {
		r.readers[id] = next
		r.wakeWritersLocked()
	}
	return n, next, nil, false
}
