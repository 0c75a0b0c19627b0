//go:build linux

package qemu

import "testing"

// TestLockFailure reads the path out of what QEMU 7.2 prints when another
// process holds a disk image (as TestQEMULocks in package volume sees it).
func TestLockFailure(t *testing.T) {
	for log, want := range map[string]string{
		"qemu-system-x86_64: -device virtio-blk-device,drive=disk1,serial=v-1: Failed to get \"write\" lock\nIs another process using the image [/s/_volumes/p_data/disk.img]?\n": "/s/_volumes/p_data/disk.img",
		"qemu-system-x86_64: -device virtio-blk-device,drive=d0: Failed to get shared \"write\" lock\nIs another process using the image [/a b/disk.img]?\n":                      "/a b/disk.img",
		"qemu-system-x86_64: -drive if=none,id=disk0,format=raw,file=/x: Could not open '/x': No such file or directory\n":                                                        "",
		"qemu-system-x86_64: terminating on signal 15\n": "",
	} {
		got, ok := lockFailure([]byte(log))
		if got != want || ok != (want != "") {
			t.Errorf("lockFailure(%q) = %q, %v; want %q", log, got, ok, want)
		}
	}
}
