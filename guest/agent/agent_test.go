package agent

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// TestHandshakeSkipsStaleBytes: leftovers of an earlier connection on both
// sides, and hellos repeated while the guest was slow, must not reach the
// multiplexer.
func TestHandshakeSkipsStaleBytes(t *testing.T) {
	hostEnd, guestEnd := net.Pipe()
	defer hostEnd.Close()
	defer guestEnd.Close()
	guestDone := make(chan error, 1)
	go func() {
		// A stale READY for another nonce and yamux-looking garbage first.
		guestEnd.Write([]byte("\x00\x01garbage\n" + handshakePrefix + "READY 0123\n"))
		// Let a few hellos pile up before answering.
		time.Sleep(3 * helloInterval / 2)
		guestDone <- GuestHandshake(guestEnd, guestEnd)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hostHandshake(ctx, hostEnd); err != nil {
		t.Fatal(err)
	}
	if err := <-guestDone; err != nil {
		t.Fatal(err)
	}
	// Both ends are now exactly past the handshake.
	go hostEnd.Write([]byte("after"))
	b := make([]byte, 5)
	if _, err := io.ReadFull(guestEnd, b); err != nil || string(b) != "after" {
		t.Errorf("guest read %q, %v after the handshake", b, err)
	}
}

func TestHandshakeHonoursContext(t *testing.T) {
	hostEnd, guestEnd := net.Pipe()
	defer hostEnd.Close()
	go io.Copy(io.Discard, guestEnd) // a guest that never answers
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := hostHandshake(ctx, hostEnd)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("handshake with a silent guest: %v, want deadline exceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("handshake returned after %v", d)
	}
}

func TestHeadersAndFrames(t *testing.T) {
	var buf bytes.Buffer
	d := 3 * time.Second
	req := Request{Op: opStart, Spec: &Spec{Entrypoint: []string{}, Command: nil, StopGracePeriod: &d}}
	if err := WriteHeader(&buf, req); err != nil {
		t.Fatal(err)
	}
	if err := WriteFrame(&buf, FrameStdout, []byte("hi")); err != nil {
		t.Fatal(err)
	}
	var got Request
	if err := ReadHeader(&buf, &got); err != nil {
		t.Fatal(err)
	}
	// nil and empty entrypoints mean different things: they must survive.
	if got.Spec.Entrypoint == nil || len(got.Spec.Entrypoint) != 0 || got.Spec.Command != nil {
		t.Errorf("entrypoint %#v, command %#v after the round trip", got.Spec.Entrypoint, got.Spec.Command)
	}
	if *got.Spec.StopGracePeriod != d {
		t.Errorf("grace %v", *got.Spec.StopGracePeriod)
	}
	typ, payload, err := ReadFrame(&buf, nil)
	if err != nil || typ != FrameStdout || string(payload) != "hi" {
		t.Errorf("frame %d %q %v", typ, payload, err)
	}
	if err := ReadHeader(strings.NewReader("\xff\xff\xff\xff"), &got); err == nil {
		t.Error("a 4 GiB header was accepted")
	}
	if _, _, err := ReadFrame(strings.NewReader("\x01\x00\x00\x00\x05ab"), nil); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated frame: %v", err)
	}
}

func TestGuestErrorsKeepTheirSentinel(t *testing.T) {
	for _, sentinel := range []error{ErrNotStarted, ErrExited, ErrAlreadyStarted, ErrBootFailed, ErrInvalid} {
		resp := Response{Error: "x: " + sentinel.Error(), Code: CodeOf(sentinel)}
		if err := resp.err(); !errors.Is(err, sentinel) {
			t.Errorf("%v came back as %v", sentinel, err)
		}
	}
}
