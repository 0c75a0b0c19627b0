package supervisor

import "time"

// Backoff is the delay before restart number n (0-based): 100 ms doubling
// up to 10 s, as docker's restart manager does (it caps at one minute; VMs
// already take seconds to boot).
func Backoff(n int) time.Duration {
	d := 100 * time.Millisecond
	for i := 0; i < n && d < 10*time.Second; i++ {
		d *= 2
	}
	return min(d, 10*time.Second)
}
