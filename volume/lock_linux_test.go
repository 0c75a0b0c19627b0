package volume_test

import (
	"bytes"
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testenv"
	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/volume"
)

// qemuWith starts a QEMU, paused before its guest runs, that opens the
// disk image at path as vmcompose attaches a volume (read-only or not).
// It returns once the QEMU took the image and has been running for a
// moment (QEMU opens its drives as it starts), or with what it printed
// when it refused to.
func qemuWith(t *testing.T, path string, readOnly bool) (stop func(), refused string) {
	t.Helper()
	bin := testenv.LookPath(t, "qemu-system-x86_64", "qemu-system-x86")
	drive := "if=none,id=d0,format=raw,file=" + path
	if readOnly {
		drive += ",readonly=on"
	} else {
		drive += ",discard=unmap"
	}
	var out bytes.Buffer
	c := exec.Command(bin, "-M", "microvm", "-nodefaults", "-display", "none", "-S",
		"-drive", drive, "-device", "virtio-blk-device,drive=d0")
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	stop = func() { c.Process.Kill(); <-done }
	deadline := time.After(20 * time.Second)
	for {
		select {
		case <-done:
			return func() {}, out.String()
		case <-deadline:
			stop()
			t.Fatalf("qemu did not open %s: %s", path, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if open, writer, _ := volume.Opened(path); open && (writer || readOnly) {
			break
		}
	}
	select {
	case <-done:
		return func() {}, out.String()
	case <-time.After(2 * time.Second):
	}
	t.Cleanup(stop)
	return stop, ""
}

// TestQEMULocks: what Opened probes is what QEMU enforces. A QEMU with a
// volume's image open to write shows as an open writer, and a second one
// cannot open it, to write or to read; readers share it and keep writers
// out; with none left it is not open. While Recover replays a journal,
// no QEMU can open the image; it leaves alone an image a QEMU has open.
func TestQEMULocks(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	v, _, err := s.Create(ctx, "vol", volume.Spec{Kind: volume.Disk, Size: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	path := v.Mountpoint()
	if open, _, err := v.Opened(); open || err != nil {
		t.Fatalf("a new volume is open: %v", err)
	}
	stop, _ := qemuWith(t, path, false)
	for _, ro := range []bool{false, true} {
		if _, refused := qemuWith(t, path, ro); !strings.Contains(refused, "lock") || !strings.Contains(refused, "Is another process using the image") {
			t.Errorf("a second QEMU (read-only %v) beside a writer: %q", ro, refused)
		}
	}
	stop()
	if open, _, _ := v.Opened(); open {
		t.Error("open after its QEMU ended")
	}

	r1, _ := qemuWith(t, path, true)
	r2, _ := qemuWith(t, path, true)
	if _, refused := qemuWith(t, path, false); !strings.Contains(refused, `Failed to get "write" lock`) {
		t.Errorf("a writer beside readers: %q", refused)
	}
	if open, writer, _ := v.Opened(); !open || writer {
		t.Errorf("two readers: open %v, writer %v", open, writer)
	}

	// A journal to replay (the flag alone: e2fsck replays an empty
	// journal the same way). With readers, Recover leaves it.
	if out, err := exec.Command("debugfs", "-w", "-R", "feature needs_recovery", path).CombinedOutput(); err != nil {
		t.Fatalf("debugfs: %v %s", err, out)
	}
	if need, _ := vm.NeedsRecovery(path); !need {
		t.Fatal("needs_recovery is not set")
	}
	if done, err := s.Recover(ctx, v); done || err != nil {
		t.Errorf("Recover of an open volume: %v, %v", done, err)
	}
	r1()
	r2()
	release, err := volume.HoldOff(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, ro := range []bool{false, true} {
		if _, refused := qemuWith(t, path, ro); !strings.Contains(refused, "lock") {
			t.Errorf("a QEMU (read-only %v) while Recover holds the image off: %q", ro, refused)
		}
	}
	release()
	if done, err := s.Recover(ctx, v); !done || err != nil {
		t.Errorf("Recover: %v, %v", done, err)
	}
	if need, _ := vm.NeedsRecovery(path); need {
		t.Error("needs_recovery is still set after Recover")
	}
	fsck(t, path)
	if done, err := s.Recover(ctx, v); done || err != nil {
		t.Errorf("Recover of a clean volume: %v, %v", done, err)
	}
}
