//go:build linux

package agentd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/guest/agent"
)

// syncOnce runs one sync request against s over a pipe, as the host
// would send it, and returns the guest's answer.
func syncOnce(t *testing.T, s *Server, spec agent.SyncSpec, entries []agent.SyncEntry) agent.Response {
	t.Helper()
	host, guest := net.Pipe()
	defer host.Close()
	go s.handle(guest)
	go func() {
		agent.WriteHeader(host, agent.Request{Op: "sync", Sync: &spec})
		agent.WriteSyncEntries(host, entries)
	}()
	var resp agent.Response
	if err := agent.ReadHeader(host, &resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func content(s string) func() (io.ReadCloser, error) {
	return func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(s)), nil }
}

// TestSyncApplies applies a batch on the host's file system (the agent's
// code, without a VM): files, a nested new directory, a symlink, deletes,
// a mode, the owner; a .. and a symlink out of the target are refused and
// nothing outside changes. The VM test (cmd/vmcompose TestSync) does it in
// a guest.
func TestSyncApplies(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files away")
	}
	base := t.TempDir()
	target := filepath.Join(base, "app")
	outside := filepath.Join(base, "outside")
	os.MkdirAll(filepath.Join(target, "old", "deep"), 0o755)
	os.WriteFile(filepath.Join(target, "old", "deep", "f"), []byte("x"), 0o644)
	os.WriteFile(filepath.Join(target, "gone"), []byte("x"), 0o644)
	os.Mkdir(outside, 0o755)
	os.Symlink(outside, filepath.Join(target, "out"))
	os.Symlink("/", filepath.Join(target, "root"))

	s := New(slog.New(slog.DiscardHandler), nil)
	f := func(p string, mode uint32, data string) agent.SyncEntry {
		return agent.SyncEntry{Op: agent.SyncFile, Path: p, Mode: mode, Size: int64(len(data)), Open: content(data)}
	}
	resp := syncOnce(t, s, agent.SyncSpec{Target: target, User: "1234:5678"}, []agent.SyncEntry{
		f("a.txt", 0o640, "hello"),
		f("new/nested/dir/b.sh", 0o755, "#!/bin/sh\n"),
		{Op: agent.SyncSymlink, Path: "link", Link: "a.txt"},
		{Op: agent.SyncDir, Path: "empty", Mode: 0o700},
		{Op: agent.SyncDelete, Path: "gone"},
		{Op: agent.SyncDelete, Path: "old"},
		{Op: agent.SyncDelete, Path: "never-was"},
		f("../escape", 0o644, "no"),
		f("out/pwned", 0o644, "no"),
		f("root/tmp/pwned", 0o644, "no"),
		{Op: agent.SyncChmod, Path: "out", Mode: 0o777},
		f("after", 0o600, "still applied"),
	})
	if resp.Error != "" || resp.Sync == nil {
		t.Fatalf("answer: %+v", resp)
	}
	r := *resp.Sync
	if r.Written != 5 || r.Deleted != 2 || r.Bytes != int64(len("hello#!/bin/sh\nstill applied")) {
		t.Errorf("result %+v", r)
	}
	skipped := map[string]string{}
	for _, sk := range r.Skipped {
		skipped[sk.Path] = sk.Reason
	}
	for _, p := range []string{"../escape", "out/pwned", "root/tmp/pwned", "out"} {
		if !strings.Contains(skipped[p], "refused") {
			t.Errorf("%s: skipped %q, want refused", p, skipped[p])
		}
	}
	if len(r.Skipped) != 4 {
		t.Errorf("skipped %+v", r.Skipped)
	}
	check := func(p string, mode os.FileMode, data string) {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(target, p))
		if err != nil {
			t.Error(err)
			return
		}
		st := fi.Sys().(*syscall.Stat_t)
		if fi.Mode() != mode || st.Uid != 1234 || st.Gid != 5678 {
			t.Errorf("%s: %v %d:%d, want %v 1234:5678", p, fi.Mode(), st.Uid, st.Gid, mode)
		}
		if data != "" {
			if b, _ := os.ReadFile(filepath.Join(target, p)); string(b) != data {
				t.Errorf("%s: %q, want %q", p, b, data)
			}
		}
	}
	check("a.txt", 0o640, "hello")
	check("new", os.ModeDir|0o755, "")
	check("new/nested/dir/b.sh", 0o755, "#!/bin/sh\n")
	check("link", os.ModeSymlink|0o777, "hello")
	check("empty", os.ModeDir|0o700, "")
	for _, p := range []string{"gone", "old"} {
		if _, err := os.Lstat(filepath.Join(target, p)); !os.IsNotExist(err) {
			t.Errorf("%s not deleted: %v", p, err)
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Errorf("outside the target: %v", ents)
	}
	if fi, _ := os.Stat(outside); fi.Mode().Perm() != 0o755 {
		t.Errorf("outside's mode: %v", fi.Mode())
	}
	for _, p := range []string{filepath.Join(base, "escape"), "/tmp/pwned"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s written", p)
		}
	}
	if ents, _ := filepath.Glob(filepath.Join(target, ".*vmsync*")); len(ents) != 0 {
		t.Errorf("temporary files left: %v", ents)
	}

	resp = syncOnce(t, s, agent.SyncSpec{Target: "/run/secrets/x"}, nil)
	if !strings.Contains(resp.Error, "secrets") {
		t.Errorf("a target in /run/secrets: %+v", resp)
	}
}

// TestClientSync goes through the host's Client and the guest's Serve
// (in-process, over a pipe): a file gone from the host is skipped there
// and the batch goes on; a read-only target is an error; a target the
// host refuses never reaches the guest.
func TestClientSync(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a read-only file system")
	}
	host, guest := net.Pipe()
	s := New(slog.New(slog.DiscardHandler), nil)
	go func() {
		if agent.GuestHandshake(guest, guest) == nil {
			s.Serve(guest)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := agent.Dial(ctx, host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	target := t.TempDir()
	gone := agent.SyncEntry{Op: agent.SyncFile, Path: "gone", Size: 1,
		Open: func() (io.ReadCloser, error) { return os.Open(filepath.Join(target, "no-such-file")) }}
	res, err := c.Sync(ctx, agent.SyncSpec{Target: target}, []agent.SyncEntry{
		gone,
		{Op: agent.SyncFile, Path: "kept", Mode: 0o644, Size: 2, Open: content("ok")},
	})
	if err != nil || res.Written != 1 || len(res.Skipped) != 1 || !strings.Contains(res.Skipped[0].Reason, "on the host") {
		t.Errorf("a file gone from the host: %+v %v", res, err)
	}
	if b, _ := os.ReadFile(filepath.Join(target, "kept")); string(b) != "ok" {
		t.Errorf("kept: %q", b)
	}

	ro := t.TempDir()
	if err := unix.Mount("tmpfs", ro, "tmpfs", unix.MS_RDONLY, ""); err != nil {
		t.Fatal(err)
	}
	defer unix.Unmount(ro, unix.MNT_DETACH)
	big := agent.SyncEntry{Op: agent.SyncFile, Path: "big", Size: 8 << 20,
		Open: func() (io.ReadCloser, error) { return io.NopCloser(io.LimitReader(zeros{}, 8<<20)), nil }}
	_, err = c.Sync(ctx, agent.SyncSpec{Target: ro}, []agent.SyncEntry{big})
	if !errors.Is(err, agent.ErrInvalid) || !strings.Contains(err.Error(), "not writable") {
		t.Errorf("a read-only target: %v", err)
	}
	if _, err := c.Sync(ctx, agent.SyncSpec{Target: "relative"}, nil); !errors.Is(err, agent.ErrInvalid) {
		t.Errorf("a relative target: %v", err)
	}
	// The connection still serves.
	if _, err := c.Status(ctx); err != nil {
		t.Errorf("after the refusals: %v", err)
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
