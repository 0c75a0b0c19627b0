package oci

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// PullPolicy says when Pull contacts the registry. The values and their
// meaning are docker compose's pull_policy.
type PullPolicy string

const (
	// PullAlways fetches the manifest every time; blobs already in the store
	// are still not downloaded again.
	PullAlways PullPolicy = "always"
	// PullMissing pulls only when the store has no image for the reference
	// and platform. It is the default.
	PullMissing PullPolicy = "missing"
	// PullNever never contacts the registry; an image missing from the store
	// is an error wrapping ErrNotFound.
	PullNever PullPolicy = "never"
	// PullDaily pulls when the image is missing or was last pulled more than
	// 24 hours ago.
	PullDaily PullPolicy = "daily"
)

// ParsePullPolicy parses a compose pull_policy value. "" is PullMissing;
// "if_not_present" (an alias compose accepts) is PullMissing too.
func ParsePullPolicy(s string) (PullPolicy, error) {
	switch p := PullPolicy(s); p {
	case "", "if_not_present":
		return PullMissing, nil
	case PullAlways, PullMissing, PullNever, PullDaily:
		return p, nil
	}
	return "", fmt.Errorf("pull policy %q: want always, missing, never or daily", s)
}

// Option configures Pull, Import and Image. Each of those methods documents
// the options it honours and ignores the others.
type Option func(*options) error

type options struct {
	platform  v1.Platform
	policy    PullPolicy
	insecure  map[string]bool
	progress  func(Event)
	jobs      int
	keychain  authn.Keychain
	auth      authn.Authenticator
	backoff   remote.Backoff
	transport http.RoundTripper
	logger    *slog.Logger
	stall     time.Duration // a layer download with no data for this long is retried
	clock     clock         // waits between attempts; tests replace it
}

// DefaultJobs is the number of blobs Pull downloads at once by default.
const DefaultJobs = 4

// DefaultBackoff is the retry schedule of every registry request answered
// with a 5xx or 429 or failing with a timeout or broken connection: 5
// attempts, waiting 0.5 s, 1.5 s, 4.5 s and 13.5 s (plus up to 10 % jitter)
// between them, about 20 s in all. A Retry-After header of the registry
// replaces the wait, capped at 10 s. A layer whose body breaks after a 200
// is downloaded again on the same schedule.
var DefaultBackoff = remote.Backoff{Duration: 500 * time.Millisecond, Factor: 3, Jitter: 0.1, Steps: 5}

// HostPlatform is the default platform: linux on the host's architecture
// (linux/amd64 on x86-64, linux/arm64 on arm64), since images run in Linux VMs
// of the host's architecture.
func HostPlatform() v1.Platform {
	return v1.Platform{OS: "linux", Architecture: runtime.GOARCH}
}

func makeOptions(opts []Option) (*options, error) {
	o := &options{
		platform: HostPlatform(),
		policy:   PullMissing,
		jobs:     DefaultJobs,
		backoff:  DefaultBackoff,
		keychain: authn.DefaultKeychain,
		logger:   discardLogger,
		stall:    60 * time.Second,
		clock:    realClock,
	}
	for _, opt := range opts {
		if err := opt(o); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// WithPlatform selects the platform ("linux/arm64", "linux/arm/v7", as in a
// compose service's platform:) resolved from multi-platform images. The
// default is HostPlatform. Honoured by Pull, Import and Image.
func WithPlatform(platform string) Option {
	return func(o *options) error {
		if platform == "" {
			return nil
		}
		p, err := v1.ParsePlatform(platform)
		if err != nil {
			return fmt.Errorf("platform %q: %w", platform, err)
		}
		if p.OS == "" || p.Architecture == "" {
			return fmt.Errorf("platform %q: want OS/ARCH[/VARIANT], e.g. linux/arm64", platform)
		}
		o.platform = *p
		return nil
	}
}

// WithPolicy sets the pull policy (default PullMissing). Honoured by Pull.
func WithPolicy(p PullPolicy) Option {
	return func(o *options) error {
		switch p {
		case PullAlways, PullMissing, PullNever, PullDaily:
			o.policy = p
			return nil
		case "":
			o.policy = PullMissing
			return nil
		}
		return fmt.Errorf("pull policy %q: want always, missing, never or daily", p)
	}
}

// WithInsecureRegistries allows plain HTTP (and HTTPS with any certificate
// left to the transport) to the given registries, named as in image
// references: "registry.lan:5000", "10.0.0.5:5000". localhost, 127.0.0.0/8 and
// ::1 are always allowed plain HTTP; every other registry must use HTTPS.
// Honoured by Pull.
func WithInsecureRegistries(registries ...string) Option {
	return func(o *options) error {
		if o.insecure == nil {
			o.insecure = map[string]bool{}
		}
		for _, r := range registries {
			r = strings.TrimSpace(r)
			if r == "" || strings.ContainsAny(r, "/ ") {
				return fmt.Errorf("insecure registry %q: want HOST or HOST:PORT", r)
			}
			o.insecure[strings.ToLower(r)] = true
		}
		return nil
	}
}

// WithProgress sets the sink for progress events. Calls are serialised (the
// sink needs no lock) and must return quickly. Honoured by Pull and Import.
func WithProgress(sink func(Event)) Option {
	return func(o *options) error {
		o.progress = sink
		return nil
	}
}

// WithJobs sets how many blobs are downloaded at once (default DefaultJobs).
// Honoured by Pull.
func WithJobs(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("jobs %d: want at least 1", n)
		}
		o.jobs = n
		return nil
	}
}

// WithKeychain sets where credentials come from (default
// authn.DefaultKeychain: the docker config file and its credential helpers).
// Honoured by Pull.
func WithKeychain(k authn.Keychain) Option {
	return func(o *options) error {
		if k == nil {
			return fmt.Errorf("keychain: nil")
		}
		o.keychain, o.auth = k, nil
		return nil
	}
}

// WithAuth uses fixed credentials for every registry instead of a keychain.
// Honoured by Pull.
func WithAuth(a authn.Authenticator) Option {
	return func(o *options) error {
		if a == nil {
			return fmt.Errorf("authenticator: nil")
		}
		o.auth, o.keychain = a, nil
		return nil
	}
}

// WithRetryBackoff sets the retry schedule (default DefaultBackoff): Steps
// is the number of attempts per request, Duration the first wait, Factor
// what each later wait is multiplied by, Jitter the random part added (0.1:
// up to 10 %). Honoured by Pull.
func WithRetryBackoff(b remote.Backoff) Option {
	return func(o *options) error {
		if b.Steps < 1 || b.Duration < 0 {
			return fmt.Errorf("retry backoff: want Steps >= 1 and Duration >= 0")
		}
		o.backoff = b
		return nil
	}
}

// WithTransport sets the HTTP transport under the retry, auth and
// plain-HTTP guard layers (default: go-containerregistry's
// remote.DefaultTransport with a 60 s response header timeout). Honoured by
// Pull.
func WithTransport(t http.RoundTripper) Option {
	return func(o *options) error {
		if t == nil {
			return fmt.Errorf("transport: nil")
		}
		o.transport = t
		return nil
	}
}

// WithLogger sets the logger for debug messages (retries, cleanup). The
// default discards everything. Honoured by Pull and Import.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			l = discardLogger
		}
		o.logger = l
		return nil
	}
}

var discardLogger = slog.New(slog.DiscardHandler)
