package qemu

import "time"

// rdtsc reads the CPU's time-stamp counter.
func rdtsc() uint64

// measureTSCkHz times the host's TSC against the monotonic clock over d.
// Under TCG the guest's TSC is the host's, so this is the frequency the
// guest must be told. The error is about 1 µs of jitter over d (20 ppm for
// 50 ms).
func measureTSCkHz(d time.Duration) int {
	t0 := time.Now()
	c0 := rdtsc()
	time.Sleep(d)
	c1 := rdtsc()
	el := time.Since(t0)
	if el <= 0 || c1 <= c0 {
		return 0
	}
	return int(float64(c1-c0) / (float64(el) / float64(time.Millisecond)))
}
