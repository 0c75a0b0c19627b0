package oci

import (
	"context"
	"errors"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// faults answers requests whose path contains match (every request when
// match is "") with code and a registry error body, once it is switched on
// and until it has answered okAfter of them (0: forever).
type faults struct {
	code       int
	match      string
	retryAfter string
	okAfter    int32
	on         atomic.Bool
	served     atomic.Int32
}

func (f *faults) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !f.on.Load() || !strings.Contains(r.URL.Path, f.match) ||
			(f.okAfter > 0 && f.served.Load() >= f.okAfter) {
			next.ServeHTTP(w, r)
			return
		}
		f.served.Add(1)
		if f.retryAfter != "" {
			w.Header().Set("Retry-After", f.retryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(f.code)
		w.Write([]byte(`{"errors":[{"code":"UNKNOWN","message":"injected fault"}]}`))
	})
}

// fakeClock stands still except when a retry sleeps, so retry schedules
// run at once and their waits can be read back.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	waits []time.Duration
}

func (c *fakeClock) option() Option {
	return func(o *options) error {
		o.clock = clock{now: c.now, sleep: c.sleep}
		return nil
	}
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.waits = append(c.waits, d)
	c.t = c.t.Add(d)
	return ctx.Err()
}

func (c *fakeClock) slept() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	var sum time.Duration
	for _, w := range c.waits {
		sum += w
	}
	return sum
}

// faultyRegistry pushes a one-layer image to a registry behind f and then
// switches the faults on. It returns the reference, the request counter and
// the layer's digest.
func faultyRegistry(t *testing.T, f *faults) (string, *hits, string) {
	t.Helper()
	host, h := newRegistry(t, f.wrap)
	ref := host + "/x/y:1"
	l := layerOf(t, 1, 4096)
	push(t, ref, imageOf(t, "linux/amd64", l))
	d, _ := l.Digest()
	h.reset()
	f.on.Store(true)
	return ref, h, d.String()
}

// The default schedule waits 0.5+1.5+4.5+13.5 = 20 s, plus up to 10 % jitter.
func checkDefaultSchedule(t *testing.T, c *fakeClock) {
	t.Helper()
	if got := c.slept(); got < 20*time.Second || got > 22*time.Second {
		t.Errorf("waited %s (%v), want 20-22 s", got, c.waits)
	}
}

func TestPullGivesUpAfterFiveAttempts(t *testing.T) {
	f := &faults{code: http.StatusServiceUnavailable}
	ref, h, _ := faultyRegistry(t, f)
	c := &fakeClock{}
	_, err := openStore(t).Pull(context.Background(), ref, WithPlatform("linux/amd64"), c.option())
	if got := h.total(); got != 5 {
		t.Errorf("%d requests (%v), want 5", got, h.kinds)
	}
	checkDefaultSchedule(t, c)
	want := regexp.MustCompile(`^pulling ` + regexp.QuoteMeta(ref) +
		`: registry answered 503 Service Unavailable 5 times in 2[012]s \(last: UNKNOWN: injected fault\)$`)
	if err == nil || !want.MatchString(err.Error()) {
		t.Errorf("error %v\nwant %s", err, want)
	}
	if errors.Is(err, ErrTerminal) {
		t.Errorf("%v: marked terminal; a registry that is down may come back", err)
	}
}

// A failing layer GET is tried 5 times, not 5 by the transport times 5 by
// the layer download.
func TestPullFailingLayerIsTriedFiveTimes(t *testing.T) {
	f := &faults{code: http.StatusInternalServerError}
	ref, h, layer := faultyRegistry(t, f)
	f.match = layer
	c := &fakeClock{}
	s := openStore(t)
	_, err := s.Pull(context.Background(), ref, WithPlatform("linux/amd64"), c.option())
	if got := h.blobs[layer]; got != 5 {
		t.Errorf("%d GETs of the layer, want 5", got)
	}
	checkDefaultSchedule(t, c)
	want := "pulling " + ref + ": layer " + layer + ": registry answered 500 Internal Server Error 5 times in "
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(err.Error(), "(last: UNKNOWN: injected fault)") {
		t.Errorf("error %v\nwant %s…", err, want)
	}
	if blobs(t, s)[layer] {
		t.Error("the layer is in the store")
	}
	checkStore(t, s)
}

func TestPullHonoursRetryAfter(t *testing.T) {
	f := &faults{code: http.StatusTooManyRequests, retryAfter: "2", match: "/manifests/"}
	ref, h, _ := faultyRegistry(t, f)
	c := &fakeClock{}
	_, err := openStore(t).Pull(context.Background(), ref, WithPlatform("linux/amd64"), c.option())
	if got := h.get("GET manifest"); got != 5 {
		t.Errorf("%d manifest GETs, want 5", got)
	}
	if got := c.slept(); got != 8*time.Second {
		t.Errorf("waited %s (%v), want 4 × the 2 s of Retry-After", got, c.waits)
	}
	want := "pulling " + ref + ": registry answered 429 Too Many Requests 5 times in 8s (last: UNKNOWN: injected fault)"
	if err == nil || err.Error() != want {
		t.Errorf("error %v\nwant %s", err, want)
	}
}

func TestPullRecoversAfterFailures(t *testing.T) {
	f := &faults{code: http.StatusInternalServerError, okAfter: 3}
	ref, h, _ := faultyRegistry(t, f)
	c := &fakeClock{}
	s := openStore(t)
	if _, err := s.Pull(context.Background(), ref, WithPlatform("linux/amd64"), c.option()); err != nil {
		t.Fatal(err)
	}
	if got := h.get("GET other"); got != 4 {
		t.Errorf("%d pings, want 4 (3 answered 500)", got)
	}
	if got := c.slept(); got < 6500*time.Millisecond || got > 7150*time.Millisecond {
		t.Errorf("waited %s (%v), want 0.5+1.5+4.5 s plus jitter", got, c.waits)
	}
	checkStore(t, s)
}

func TestPullCancelledWhileWaiting(t *testing.T) {
	f := &faults{code: http.StatusServiceUnavailable, retryAfter: "10", match: "/manifests/"}
	ref, _, _ := faultyRegistry(t, f)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	s := openStore(t)
	_, err := s.Pull(ctx, ref, WithPlatform("linux/amd64"))
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 2*time.Second {
		t.Errorf("after %s: %v, want the deadline at once", time.Since(start), err)
	}
	checkStore(t, s)
}

// One real schedule, no fake clock: a layer that always fails costs 5 GETs
// and about 20 s.
func TestPullGivesUpInTwentySeconds(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 20 s")
	}
	f := &faults{code: http.StatusInternalServerError}
	ref, h, layer := faultyRegistry(t, f)
	f.match = layer
	start := time.Now()
	_, err := openStore(t).Pull(context.Background(), ref, WithPlatform("linux/amd64"))
	took := time.Since(start)
	t.Logf("%d requests %v in %s: %v", h.total(), h.kinds, took, err)
	if h.blobs[layer] != 5 || took < 20*time.Second || took > 25*time.Second {
		t.Errorf("%d GETs of the layer in %s, want 5 in 20-22 s", h.blobs[layer], took)
	}
	if err == nil || !strings.Contains(err.Error(), "registry answered 500 Internal Server Error 5 times in") {
		t.Errorf("error %v", err)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"3", 3 * time.Second, true},
		{" 0 ", 0, true},
		{"120", maxRetryAfter, true},
		{"-5", 0, true},
		{now.Add(4 * time.Second).Format(http.TimeFormat), 4 * time.Second, true},
		{now.Add(time.Hour).Format(http.TimeFormat), maxRetryAfter, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"", 0, false},
		{"soon", 0, false},
	} {
		got, ok := retryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("retryAfter(%q) = %s, %v; want %s, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}
