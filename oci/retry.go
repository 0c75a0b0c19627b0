package oci

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Retries. One layer owns them: retrier, the transport under
// go-containerregistry's auth layers, gives every registry request (ping,
// token, manifest, blob) the attempts of the backoff and nothing else
// retries a status or a failed connection (go-containerregistry's own retry
// transport is switched off in remoteOptions). fetchLayer only restarts
// downloads whose body broke after a 200, which no transport can see.

// maxRetryAfter caps the wait a Retry-After header asks for, so a registry
// cannot park a pull for minutes.
const maxRetryAfter = 10 * time.Second

// retryStatus lists the answers worth another attempt: timeouts, rate
// limits and server errors (499 and 522 are nginx's and Cloudflare's).
var retryStatus = map[int]bool{
	http.StatusRequestTimeout:      true,
	http.StatusTooManyRequests:     true,
	http.StatusInternalServerError: true,
	http.StatusBadGateway:          true,
	http.StatusServiceUnavailable:  true,
	http.StatusGatewayTimeout:      true,
	499:                            true,
	522:                            true,
}

// retrier retries a request that failed with a status in retryStatus or a
// broken connection, up to backoff.Steps attempts in all, waiting the
// Retry-After the registry asked for (capped at maxRetryAfter) or else the
// backoff with jitter. When the attempts run out it returns a *retryError.
type retrier struct {
	inner   http.RoundTripper
	backoff remote.Backoff
	clock   clock
	logger  *slog.Logger
}

var _ http.RoundTripper = (*retrier)(nil)

func (r *retrier) RoundTrip(req *http.Request) (*http.Response, error) {
	start := r.clock.now()
	var codes []int
	for attempt := 1; ; attempt++ {
		resp, err := r.inner.RoundTrip(req)
		if !retryable(resp, err) {
			return resp, err
		}
		if resp != nil {
			codes = append(codes, resp.StatusCode)
		}
		next, rewound := rewind(req)
		if attempt >= r.backoff.Steps || !rewound {
			return nil, exhausted(resp, err, codes, attempt, r.clock.now().Sub(start))
		}
		wait := backoffDelay(r.backoff, attempt)
		if resp != nil {
			if d, ok := retryAfter(resp.Header.Get("Retry-After"), r.clock.now()); ok {
				wait = d
			}
			io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		r.logger.Debug("retrying registry request", "method", req.Method, "url", req.URL.Redacted(),
			"attempt", attempt, "status", statusOf(resp), "err", err, "wait", wait)
		if err := r.clock.sleep(req.Context(), wait); err != nil {
			return nil, err
		}
		req = next
	}
}

// retryable reports whether a round trip's outcome is worth another attempt.
func retryable(resp *http.Response, err error) bool {
	if err != nil {
		return transientNet(err)
	}
	return retryStatus[resp.StatusCode]
}

// transientNet reports whether a network error may pass when tried again:
// resets, connections closed early, timeouts. Cancellation and terminal
// errors (the plain HTTP guard) may not.
func transientNet(err error) bool {
	if errors.Is(err, ErrTerminal) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// rewind returns req ready to be sent again, with a fresh body; false if
// its body cannot be read again.
func rewind(req *http.Request) (*http.Request, bool) {
	if req.Body == nil || req.Body == http.NoBody {
		return req, true
	}
	if req.GetBody == nil {
		return nil, false
	}
	body, err := req.GetBody()
	if err != nil {
		return nil, false
	}
	next := req.Clone(req.Context())
	next.Body = body
	return next, true
}

// backoffDelay is the wait after the attempt-th failed attempt:
// b.Duration·b.Factor^(attempt-1), plus up to b.Jitter of it at random.
func backoffDelay(b remote.Backoff, attempt int) time.Duration {
	d := float64(b.Duration)
	for range attempt - 1 {
		d *= max(b.Factor, 1)
	}
	if b.Jitter > 0 {
		d += d * b.Jitter * rand.Float64()
	}
	return time.Duration(d)
}

// retryAfter parses a Retry-After header, seconds or an HTTP date, into a
// wait of at most maxRetryAfter.
func retryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	var d time.Duration
	if s, err := strconv.Atoi(v); err == nil {
		d = time.Duration(s) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	} else {
		return 0, false
	}
	return min(max(d, 0), maxRetryAfter), true
}

func statusOf(resp *http.Response) int {
	if resp == nil {
		return 0
	}
	return resp.StatusCode
}

// retryError says that a request failed every attempt. It unwraps to the
// last failure (a *transport.Error for a status), and fetchLayer does not
// retry it again.
type retryError struct {
	status   int  // the last status; 0 if the last attempt got no answer
	same     bool // every attempt got the same status
	attempts int  // attempts made
	elapsed  time.Duration
	last     error // the registry's message or the network error
}

func (e *retryError) Unwrap() error { return e.last }

func (e *retryError) Error() string {
	in := roundElapsed(e.elapsed)
	msg := lastMessage(e.last)
	switch {
	case e.status != 0 && e.same:
		return fmt.Sprintf("registry answered %s %d times in %s (last: %s)", statusText(e.status), e.attempts, in, msg)
	case e.status != 0:
		return fmt.Sprintf("registry failed %d attempts in %s, the last with %s (%s)", e.attempts, in, statusText(e.status), msg)
	}
	return fmt.Sprintf("registry unreachable: %d attempts in %s failed (last: %s)", e.attempts, in, msg)
}

// exhausted builds the retryError for the last round trip, reading the
// registry's error message from resp.
func exhausted(resp *http.Response, err error, codes []int, attempts int, elapsed time.Duration) error {
	e := &retryError{attempts: attempts, elapsed: elapsed, last: err, same: true}
	if resp != nil {
		e.status = resp.StatusCode
		e.last = transport.CheckError(resp, http.StatusOK)
		resp.Body.Close()
		for _, c := range codes {
			e.same = e.same && c == e.status
		}
	}
	return e
}

// lastMessage is the registry's own words without the request line
// go-containerregistry puts in front ("GET https://…: UNKNOWN: …").
func lastMessage(err error) string {
	var te *transport.Error
	if errors.As(err, &te) {
		c := *te
		c.Request = nil
		return c.Error()
	}
	return fmt.Sprint(err)
}

func statusText(code int) string {
	if t := http.StatusText(code); t != "" {
		return fmt.Sprintf("%d %s", code, t)
	}
	return strconv.Itoa(code)
}

func roundElapsed(d time.Duration) time.Duration {
	if d >= 10*time.Second {
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}

// clock is the time source of retries, replaced in tests so that retry
// schedules run without waiting.
type clock struct {
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

var realClock = clock{now: time.Now, sleep: sleepCtx}

// sleepCtx waits d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
