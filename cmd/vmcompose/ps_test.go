package main_test

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

// TestPsKilledVM: a VM whose QEMU is SIGKILLed shows in ps as docker shows
// a SIGKILLed container: exit code 137, and says it was killed, in the
// table and in the JSON.
func TestPsKilledVM(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	dir := filepath.Join(p.home, "killed")
	p.cleanup(dir)
	compose := "services:\n  web:\n    image: " + ref + "\n    command: [sleep, '1000']\n"
	if _, stderr, code := p.in(dir, compose, "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up -d --wait: exit %d\n%s", code, stderr)
	}
	e := p.ps(dir)["web"]
	if e.State != "running" || e.Pid == 0 {
		t.Fatalf("web after up: %+v", e)
	}
	if err := syscall.Kill(e.Pid, syscall.SIGKILL); err != nil {
		t.Fatalf("killing qemu (pid %d): %v", e.Pid, err)
	}
	// ps may see the VM off a moment before its supervisor has recorded
	// how it ended.
	deadline := time.Now().Add(30 * time.Second)
	for e = p.ps(dir)["web"]; e.State != "exited" || e.ExitCode == -1; e = p.ps(dir)["web"] {
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if e.ExitCode != 137 || !strings.HasPrefix(e.Status, "Exited (137) ") || !strings.Contains(e.Status, "killed") || !strings.Contains(e.Status, "SIGKILL") {
		t.Errorf("ps --format json after qemu was SIGKILLed: ExitCode %d, Status %q; want 137 and a status that says it was killed by SIGKILL", e.ExitCode, e.Status)
	}
	out, stderr, code := p.in(dir, "", "ps", "-a")
	if code != 0 || !strings.Contains(out, "Exited (137) ") || !strings.Contains(out, "killed") {
		t.Errorf("ps -a: exit %d, %s\n%s", code, out, stderr)
	}
	t.Logf("ps -a:\n%s", out)
}
