//go:build linux

package agentd

import (
	"errors"
	"os"
	"testing"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/guest/resolve"
)

// TestStartFailures: a command that is not there and one that cannot be
// run fail with the two sentinels docker tells apart (127 and 126).
func TestStartFailures(t *testing.T) {
	r := newReaper()
	me := resolve.User{Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid())}
	script := t.TempDir() + "/not-executable"
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		argv []string
		want error
	}{
		{[]string{"no-such-command"}, agent.ErrCommandNotFound},
		{[]string{"/no/such/file"}, agent.ErrCommandNotFound},
		{[]string{"/etc"}, agent.ErrCommandNotExecutable},
		{[]string{script}, agent.ErrCommandNotExecutable},
	} {
		_, _, err := r.start(procSpec{argv: tc.argv, env: []string{"PATH=/usr/bin:/bin"}, dir: "/", user: me})
		if !errors.Is(err, tc.want) {
			t.Errorf("%q: %v, want %v", tc.argv, err, tc.want)
		}
		if code := agent.CodeOf(err); code == "" {
			t.Errorf("%q: no wire code for %v", tc.argv, err)
		}
	}
}
