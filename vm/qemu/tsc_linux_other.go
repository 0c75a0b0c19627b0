//go:build linux && !amd64

package qemu

import "time"

// measureTSCkHz returns 0: only amd64 guests take tsc_early_khz.
func measureTSCkHz(time.Duration) int { return 0 }
