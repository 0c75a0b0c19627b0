package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"time"
)

// The handshake, before yamux, in lines (each starts with a newline so a
// line is recognised after stray bytes):
//
//	host:  HELLO <nonce>   repeated every helloInterval until READY
//	guest: READY <nonce>   once per nonce
//	host:  GO <nonce>      then the host starts yamux
//
// The guest discards everything up to GO <nonce>, including repeated
// hellos; the host discards everything up to READY <nonce>, including
// leftovers of an earlier connection.
const (
	handshakePrefix = "VMCOMPOSE-AGENT "
	helloInterval   = 50 * time.Millisecond
)

func handshakeLine(word, nonce string) []byte {
	return []byte("\n" + handshakePrefix + word + " " + nonce + "\n")
}

// hostHandshake runs the host's half on conn.
func hostHandshake(ctx context.Context, conn net.Conn) error {
	var n [8]byte
	if _, err := rand.Read(n[:]); err != nil {
		return err
	}
	nonce := hex.EncodeToString(n[:])

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	writeErr := make(chan error, 1)
	go func() {
		t := time.NewTicker(helloInterval)
		defer t.Stop()
		for {
			if _, err := conn.Write(handshakeLine("HELLO", nonce)); err != nil {
				writeErr <- err
				return
			}
			select {
			case <-ctx.Done():
				writeErr <- nil
				return
			case <-t.C:
			}
		}
	}()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	err := scanFor(conn, handshakeLine("READY", nonce))
	if !stop() {
		err = ctx.Err()
	}
	conn.SetReadDeadline(time.Time{})
	cancel()
	if werr := <-writeErr; err == nil && werr != nil {
		err = werr
	}
	if err != nil {
		return fmt.Errorf("agent handshake: %w", err)
	}
	if _, err := conn.Write(handshakeLine("GO", nonce)); err != nil {
		return fmt.Errorf("agent handshake: %w", err)
	}
	return nil
}

// GuestHandshake runs the guest's half: it reads from r until a host has
// said hello and go, answering each new hello on w. It reads one byte at a
// time so nothing after the handshake is consumed.
func GuestHandshake(r io.Reader, w io.Writer) error {
	var line []byte
	answered := ""
	b := make([]byte, 1)
	for {
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		if b[0] != '\n' {
			if len(line) < 128 {
				line = append(line, b[0])
			}
			continue
		}
		word, nonce, ok := parseHandshake(line)
		line = line[:0]
		if !ok {
			continue
		}
		switch word {
		case "HELLO":
			if nonce != answered {
				if _, err := w.Write(handshakeLine("READY", nonce)); err != nil {
					return err
				}
				answered = nonce
			}
		case "GO":
			if nonce == answered {
				return nil
			}
		}
	}
}

func parseHandshake(line []byte) (word, nonce string, ok bool) {
	rest, found := bytes.CutPrefix(line, []byte(handshakePrefix))
	if !found {
		return "", "", false
	}
	w, n, found := bytes.Cut(rest, []byte(" "))
	if !found || len(n) == 0 {
		return "", "", false
	}
	return string(w), string(n), true
}

// scanFor reads r one byte at a time until it has seen want.
func scanFor(r io.Reader, want []byte) error {
	var window []byte
	b := make([]byte, 1)
	for {
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		window = append(window, b[0])
		if len(window) > len(want) {
			window = window[1:]
		}
		if bytes.Equal(window, want) {
			return nil
		}
	}
}
