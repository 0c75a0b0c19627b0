package agentd

import (
	"bytes"
	"math/rand/v2"
	"testing"
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
			n, next, wait, eof := r.read(off, buf)
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
	if _, _, _, eof := r.read(int64(len(all)), make([]byte, 8)); !eof {
		t.Error("no EOF at the end of a closed ring")
	}
}
