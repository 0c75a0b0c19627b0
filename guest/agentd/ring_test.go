package agentd

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"
)

func TestRing(t *testing.T) {
	const size = 64
	r := newRing(size)
	var all []byte
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		p := make([]byte, rng.IntN(3*size/2))
		for j := range p {
			p[j] = byte(rng.IntN(256))
		}
		r.Write(p)
		all = append(all, p...)
		// Read everything from a random offset, possibly already dropped.
		off := int64(rng.IntN(len(all) + 1))
		wantStart := max(off, int64(len(all)-size))
		var got []byte
		buf := make([]byte, 1+rng.IntN(size))
		first := int64(-1)
		for {
			n, next, wait, eof := r.read(0, off, buf)
			if n == 0 {
				if eof || wait == nil {
					t.Fatalf("read at end: eof=%v wait=%v", eof, wait)
				}
				break
			}
			if first < 0 {
				first = next - int64(n)
			}
			got = append(got, buf[:n]...)
			off = next
		}
		if len(got) > 0 && first != wantStart {
			t.Fatalf("first byte at %d, want %d", first, wantStart)
		}
		if !bytes.Equal(got, all[wantStart:]) {
			t.Fatalf("step %d: read %d bytes differ from the last %d written", i, len(got), len(all)-int(wantStart))
		}
	}
	r.Close()
	if _, _, _, eof := r.read(0, int64(len(all)), make([]byte, 8)); !eof {
		t.Error("no EOF at the end of a closed ring")
	}
}

// TestRingWaitsForAttachedReaders: nothing is lost for a reader that is
// attached, however slow; a detached reader does not hold writers.
func TestRingWaitsForAttachedReaders(t *testing.T) {
	r := newRing(16)
	id, start := r.attach(0)
	if start != 0 {
		t.Fatalf("attach at %d", start)
	}
	want := make([]byte, 1000)
	for i := range want {
		want[i] = byte(i)
	}
	done := make(chan struct{})
	go func() {
		for i := 0; i < len(want); i += 7 {
			r.Write(want[i:min(i+7, len(want))])
		}
		r.Close()
		close(done)
	}()
	var got []byte
	off := int64(0)
	buf := make([]byte, 5)
	for {
		n, next, wait, eof := r.read(id, off, buf)
		if n > 0 {
			if next-int64(n) != off {
				t.Fatalf("read skipped from %d to %d", off, next-int64(n))
			}
			got = append(got, buf[:n]...)
			off = next
			continue
		}
		if eof {
			break
		}
		<-wait
	}
	<-done
	if !bytes.Equal(got, want) {
		t.Fatalf("attached reader got %d bytes, want all %d", len(got), len(want))
	}

	r2 := newRing(16)
	id2, _ := r2.attach(0)
	wrote := make(chan struct{})
	go func() { r2.Write(make([]byte, 64)); close(wrote) }()
	select {
	case <-wrote:
		t.Fatal("a write overran an attached reader")
	case <-time.After(50 * time.Millisecond):
	}
	r2.detach(id2)
	select {
	case <-wrote:
	case <-time.After(5 * time.Second):
		t.Fatal("a detached reader still holds the writer")
	}
}
