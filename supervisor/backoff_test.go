package supervisor

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	if Backoff(0) != 100*time.Millisecond || Backoff(3) != 800*time.Millisecond || Backoff(50) != 10*time.Second {
		t.Errorf("backoff: %v %v %v", Backoff(0), Backoff(3), Backoff(50))
	}
}
