package boot

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reseed mixes entropy into the kernel's random number generator and
// reseeds it at once (RNDADDENTROPY, then RNDRESEEDCRNG): every guest
// restored from one template starts with the same generator state, and
// would otherwise draw the same numbers until the kernel reseeds on its
// own.
func Reseed(entropy []byte) error {
	if len(entropy) < 32 {
		return fmt.Errorf("reseeding: %d bytes of entropy, want at least 32", len(entropy))
	}
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("reseeding: %w", err)
	}
	defer f.Close()
	// struct rand_pool_info: entropy_count (bits), buf_size (bytes), buf.
	req := make([]byte, 8+len(entropy))
	*(*int32)(unsafe.Pointer(&req[0])) = int32(8 * len(entropy))
	*(*int32)(unsafe.Pointer(&req[4])) = int32(len(entropy))
	copy(req[8:], entropy)
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDADDENTROPY, uintptr(unsafe.Pointer(&req[0]))); e != 0 {
		return fmt.Errorf("reseeding: RNDADDENTROPY: %w", e)
	}
	if _, _, e := unix.Syscall(unix.SYS_IOCTL, f.Fd(), unix.RNDRESEEDCRNG, 0); e != 0 {
		return fmt.Errorf("reseeding: RNDRESEEDCRNG: %w", e)
	}
	return nil
}

// SetClock sets the system clock: a restored guest's clock shows the time
// its template was saved.
func SetClock(t time.Time) error {
	tv := unix.NsecToTimeval(t.UnixNano())
	if err := unix.Settimeofday(&tv); err != nil {
		return fmt.Errorf("setting the clock: %w", err)
	}
	return nil
}

// ProbeVirtioMMIO asks the kernel to probe the virtio-mmio transports that
// have no driver. A guest restored from a template saw its transports empty
// when virtio_mmio loaded; the copy's disks and NICs sit on them now. A
// transport still empty stays unbound.
func ProbeVirtioMMIO() (int, error) {
	devs, _ := filepath.Glob("/sys/bus/platform/devices/LNRO0005:*")
	bound := 0
	for _, d := range devs {
		if _, err := os.Lstat(filepath.Join(d, "driver")); err == nil {
			continue
		}
		if err := os.WriteFile("/sys/bus/platform/drivers_probe", []byte(filepath.Base(d)), 0); err != nil {
			return bound, fmt.Errorf("probing %s: %w", filepath.Base(d), err)
		}
		if _, err := os.Lstat(filepath.Join(d, "driver")); err == nil {
			bound++
		}
	}
	return bound, nil
}

// KernelFlag reports whether the kernel command line has flag, alone or as
// flag=1.
func KernelFlag(flag string) bool {
	b, _ := os.ReadFile("/proc/cmdline")
	for _, f := range strings.Fields(string(b)) {
		if f == flag || f == flag+"=1" {
			return true
		}
	}
	return false
}
