package oci

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/errgroup"
)

// Pull makes the image ref, for the platform (WithPlatform, default
// HostPlatform), available in the store and returns it, as the pull policy
// (WithPolicy, default PullMissing) says:
//
//   - the registry is contacted only if the policy asks for it (never for a
//     digest reference already in the store); with PullNever a missing
//     image is an error wrapping ErrNotFound; PullAlways and PullDaily send
//     a HEAD first and skip the manifest GETs when the digest is unchanged;
//   - image indexes (manifest lists) are resolved to the platform; an image
//     without it is an error wrapping ErrPlatform that lists those it has;
//   - blobs already in the store are never downloaded again, whatever image
//     or registry they came with; the others are downloaded WithJobs at a
//     time, verified against their digest and size, fsynced and renamed
//     into place, so a blob is either complete or absent;
//   - every request answered 5xx or 429 or failing with a timeout or broken
//     connection is tried up to 5 times in about 20 s (WithRetryBackoff),
//     honouring Retry-After up to 10 s; when the attempts run out the error
//     says the status and the count ("registry answered 503 Service
//     Unavailable 5 times in 19s (last: …)"). 401, 403 and 404 are not
//     retried, and come back as errors wrapping ErrTerminal and
//     ErrUnauthorized or ErrNotFound;
//   - index.json changes only once every blob is in place, so a failed or
//     cancelled pull leaves the recorded images as they were.
//
// Credentials come from WithKeychain (default: the docker config and its
// credential helpers) or WithAuth. Errors read "pulling REF: …".
func (s *Store) Pull(ctx context.Context, ref string, opts ...Option) (Image, error) {
	o, err := makeOptions(opts)
	if err != nil {
		return Image{}, fmt.Errorf("pulling %s: %w", ref, err)
	}
	r, err := parseRef(ref, o)
	if err != nil {
		return Image{}, fmt.Errorf("pulling %s: %w", ref, err)
	}
	n := canonical(r)
	var have *Image
	img, err := s.lookup(n, o.platform)
	switch {
	case err == nil && s.complete(img):
		have = &img
	case err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, fs.ErrNotExist):
		// Absent, or damaged behind our back (blobs deleted): pull it.
	default:
		return Image{}, fmt.Errorf("pulling %s: %w", n, err)
	}
	if _, byDigest := r.(name.Digest); byDigest && have != nil && o.policy != PullNever {
		return *have, nil // content addressed: nothing in the registry can be newer
	}
	if o.policy != PullAlways {
		switch {
		case have != nil && (o.policy != PullDaily || s.now().Sub(have.PulledAt) < 24*time.Hour):
			return *have, nil
		case have != nil:
			// PullDaily and the last pull is older than a day.
		case o.policy == PullNever:
			return Image{}, fmt.Errorf("pulling %s: %w", n, terminal(ErrNotFound, nil,
				"not in the store for %s and the pull policy is never: pull or import it first", o.platform))
		}
	}
	unlock, err := s.lock(ctx, gcLockFile, syscall.LOCK_SH)
	if err != nil {
		return Image{}, fmt.Errorf("pulling %s: %w", n, err)
	}
	defer unlock()
	img, err = s.pull(ctx, r, n, o, have)
	if err != nil {
		if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
			err = fmt.Errorf("%w (%v)", ctx.Err(), err)
		}
		return Image{}, fmt.Errorf("pulling %s: %w", n, err)
	}
	return img, nil
}

// complete reports whether every layer of img is in the store.
func (s *Store) complete(img Image) bool {
	m, err := img.V1.Manifest()
	if err != nil {
		return false
	}
	for _, l := range m.Layers {
		if ok, err := s.hasBlob(l.Digest, l.Size); l.MediaType.IsDistributable() && (err != nil || !ok) {
			return false
		}
	}
	return true
}

func (s *Store) remoteOptions(ctx context.Context, o *options) []remote.Option {
	inner := o.transport
	if inner == nil {
		inner = defaultTransport()
	}
	guarded := &plainHTTPGuard{inner: inner, insecure: o.insecure}
	ropts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithPlatform(o.platform),
		remote.WithJobs(o.jobs),
		// retrier owns every retry; go-containerregistry's own retry
		// transport, which would multiply the attempts, makes one.
		remote.WithTransport(&retrier{inner: guarded, backoff: o.backoff, clock: o.clock, logger: o.logger}),
		remote.WithRetryBackoff(remote.Backoff{Steps: 1}),
		remote.WithRetryStatusCodes(),
		remote.WithRetryPredicate(func(error) bool { return false }),
		remote.WithUserAgent("vmcompose"),
	}
	if o.auth != nil {
		ropts = append(ropts, remote.WithAuth(o.auth))
	} else {
		ropts = append(ropts, remote.WithAuthFromKeychain(o.keychain))
	}
	return ropts
}

// defaultTransport is go-containerregistry's default transport with a
// timeout for response headers, shared by all pulls so connections are
// reused.
var defaultTransport = sync.OnceValue(func() http.RoundTripper {
	t, ok := remote.DefaultTransport.(*http.Transport)
	if !ok {
		return remote.DefaultTransport
	}
	t = t.Clone()
	t.ResponseHeaderTimeout = 60 * time.Second
	return t
})

// pull fetches r; have is the image recorded for it, if any.
func (s *Store) pull(ctx context.Context, r name.Reference, n string, o *options, have *Image) (Image, error) {
	rep := &reporter{sink: o.progress, ref: n}
	ropts := s.remoteOptions(ctx, o)
	if have != nil && have.desc.Annotations[AnnotationSource] != "" {
		// Unchanged in the registry: one HEAD instead of the manifest GETs.
		// A HEAD failure falls through to the GET, which reports it, unless
		// the retries ran out: the GET would only wait as long again.
		hd, err := remote.Head(r, ropts...)
		if re := (*retryError)(nil); errors.As(err, &re) {
			return Image{}, re
		}
		if err == nil && hd.Digest.String() == have.desc.Annotations[AnnotationSource] {
			if err := s.record(n, have.desc, hd.Digest); err != nil {
				return Image{}, err
			}
			layers := 0
			if m, err := have.V1.Manifest(); err == nil {
				layers = len(m.Layers)
			}
			rep.send(Event{Kind: EventResolved, Digest: have.Digest.String(), Platform: have.Platform.String(), Total: have.Size, Layers: layers})
			rep.send(Event{Kind: EventDone, Digest: have.Digest.String(), Total: have.Size})
			return s.lookup(n, have.Platform)
		}
	}
	desc, err := remote.Get(r, ropts...)
	if err != nil {
		return Image{}, classify(err)
	}
	var img v1.Image
	var hint *v1.Platform
	switch {
	case desc.MediaType.IsIndex():
		idx, err := desc.ImageIndex()
		if err != nil {
			return Image{}, classify(err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return Image{}, classify(err)
		}
		child, err := pickPlatform(im, o.platform)
		if err != nil {
			return Image{}, err
		}
		hint = child.Platform
		if img, err = idx.Image(child.Digest); err != nil {
			return Image{}, classify(err)
		}
	case desc.MediaType.IsImage():
		if img, err = desc.Image(); err != nil {
			return Image{}, classify(err)
		}
	default:
		return Image{}, terminal(nil, nil, "manifest media type %s is not supported: want an OCI or Docker v2 image or index", desc.MediaType)
	}
	return s.store(ctx, storeInput{img: img, name: n, hint: hint, source: desc.Digest, remote: true}, o, rep)
}

// pickPlatform returns the index entry for platform, or an ErrPlatform error
// that lists the platforms the index has.
func pickPlatform(im *v1.IndexManifest, platform v1.Platform) (v1.Descriptor, error) {
	var have []string
	for _, d := range im.Manifests {
		if d.Platform == nil || !d.MediaType.IsImage() {
			continue
		}
		if d.Platform.Satisfies(platform) {
			return d, nil
		}
		if d.Platform.OS != "unknown" { // attestation manifests
			have = append(have, d.Platform.String())
		}
	}
	return v1.Descriptor{}, terminal(ErrPlatform, nil, "no image for %s (the image has %s): set the service's platform: to one of those",
		platform, strings.Join(have, ", "))
}

// storeInput is an image to write into the store.
type storeInput struct {
	img    v1.Image
	name   string       // the reference to record it under
	hint   *v1.Platform // the platform an index gave the image, if any
	source v1.Hash      // the digest the reference resolved to, if pulled
	// remote is set for go-containerregistry remote images: their layer
	// readers verify the digest themselves, and an image for another
	// platform than asked for is an error.
	remote bool
}

// store writes in.img (layers, config, manifest) into the store and records
// it under in.name.
func (s *Store) store(ctx context.Context, in storeInput, o *options, rep *reporter) (Image, error) {
	img, n, hint, remoteVerified, checkPlatform := in.img, in.name, in.hint, in.remote, in.remote
	m, err := img.Manifest()
	if err != nil {
		return Image{}, classify(err)
	}
	raw, err := img.RawManifest()
	if err != nil {
		return Image{}, classify(err)
	}
	digest, err := img.Digest()
	if err != nil {
		return Image{}, err
	}
	mt, err := img.MediaType()
	if err != nil {
		return Image{}, err
	}
	if !mt.IsImage() {
		return Image{}, terminal(nil, nil, "manifest media type %s is not supported", mt)
	}
	// The config is read from the store when present, so pulling an image
	// again fetches no blob at all.
	var rawCfg []byte
	if ok, _ := s.hasBlob(m.Config.Digest, m.Config.Size); ok {
		rawCfg, err = s.readBlob(m.Config.Digest)
	} else {
		rawCfg, err = img.RawConfigFile()
	}
	if err != nil {
		return Image{}, classify(err)
	}
	cfg, err := v1.ParseConfigFile(bytes.NewReader(rawCfg))
	if err != nil {
		return Image{}, terminal(nil, err, "image config: %v", err)
	}
	platform := mergePlatform(cfg, hint)
	if checkPlatform {
		if platform.OS == "" {
			platform = o.platform
		}
		if platform.Variant == "" && platform.Architecture == o.platform.Architecture {
			// Configs often omit the variant: take the one asked for, so
			// that a lookup for it finds the image.
			platform.Variant = o.platform.Variant
		}
		if !platform.Satisfies(o.platform) {
			return Image{}, terminal(ErrPlatform, nil, "the image is %s, not %s: set the service's platform: to %s to use it", platform, o.platform, platform)
		}
	}
	total := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		total += l.Size
	}
	rep.send(Event{Kind: EventResolved, Digest: digest.String(), Platform: platform.String(), Total: total, Layers: len(m.Layers)})

	var downloaded atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(o.jobs)
	for _, ld := range m.Layers {
		if !ld.MediaType.IsDistributable() {
			continue // foreign layers (Windows bases) are not stored
		}
		g.Go(func() error {
			fetched, err := s.once(ld.Digest, ld.Size, func() error {
				rep.send(Event{Kind: EventLayerStarted, Digest: ld.Digest.String(), Total: ld.Size})
				err := s.fetchLayer(gctx, img, ld, o, rep, remoteVerified, &downloaded)
				if err == nil {
					rep.send(Event{Kind: EventLayerDone, Digest: ld.Digest.String(), Current: ld.Size, Total: ld.Size})
				}
				return err
			})
			if err != nil {
				return fmt.Errorf("layer %s: %w", ld.Digest, err)
			}
			if !fetched {
				rep.send(Event{Kind: EventLayerPresent, Digest: ld.Digest.String(), Total: ld.Size})
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return Image{}, err
	}
	if err := s.writeBytes(m.Config.Digest, rawCfg); err != nil {
		return Image{}, fmt.Errorf("config: %w", err)
	}
	if err := s.writeBytes(digest, raw); err != nil {
		return Image{}, fmt.Errorf("manifest: %w", err)
	}
	d := v1.Descriptor{MediaType: mt, Size: int64(len(raw)), Digest: digest, Platform: &platform}
	if err := s.record(n, d, in.source); err != nil {
		return Image{}, err
	}
	rep.send(Event{Kind: EventDone, Digest: digest.String(), Current: downloaded.Load(), Total: total})
	res, err := s.lookup(n, platform)
	if err != nil {
		return Image{}, err
	}
	return res, nil
}

// mergePlatform returns the platform of an image config, completed by the
// platform its index gave it (configs often lack the variant).
func mergePlatform(cfg *v1.ConfigFile, hint *v1.Platform) v1.Platform {
	p := v1.Platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant, OSVersion: cfg.OSVersion}
	if hint != nil {
		if p.OS == "" && p.Architecture == "" {
			p.OS, p.Architecture = hint.OS, hint.Architecture
		}
		if p.Architecture == hint.Architecture {
			p.Variant = cmp.Or(p.Variant, hint.Variant)
			p.OSVersion = cmp.Or(p.OSVersion, hint.OSVersion)
		}
	}
	return p
}

// fetchLayer downloads one layer into the store. The transport has retried
// the GET already; fetchLayer restarts only a download whose body broke
// (truncated, reset, stalled), as many times as the backoff has attempts.
func (s *Store) fetchLayer(ctx context.Context, img v1.Image, ld v1.Descriptor, o *options, rep *reporter, verified bool, downloaded *atomic.Int64) error {
	l, err := img.LayerByDigest(ld.Digest)
	if err != nil {
		return classify(err)
	}
	for attempt := 1; ; attempt++ {
		var broken bool
		broken, err = s.downloadLayer(ctx, l, ld, o, rep, verified, downloaded)
		if err == nil || !broken || ctx.Err() != nil || attempt >= o.backoff.Steps || !transient(err) {
			break
		}
		o.logger.Debug("restarting layer download", "digest", ld.Digest.String(), "attempt", attempt, "err", err)
		if err := o.clock.sleep(ctx, backoffDelay(o.backoff, attempt)); err != nil {
			return err
		}
	}
	if err != nil {
		err = classify(err)
		if msg := err.Error(); !errors.Is(err, ErrTerminal) && (strings.Contains(msg, "error verifying") || strings.Contains(msg, "does not match expected size")) {
			err = terminal(ErrDigest, err, "%v", err)
		}
	}
	return err
}

// downloadLayer makes one attempt at downloading layer l into the store;
// broken reports that the registry answered but the body failed.
func (s *Store) downloadLayer(ctx context.Context, l v1.Layer, ld v1.Descriptor, o *options, rep *reporter, verified bool, downloaded *atomic.Int64) (broken bool, err error) {
	c := &counter{r: rep, digest: ld.Digest.String(), total: ld.Size}
	rc, err := l.Compressed()
	if err != nil {
		return false, err
	}
	defer rc.Close()
	wd := watch(ctx, rc, o.stall)
	defer wd.stop()
	err = s.writeBlob(ld.Digest, ld.Size, rc, !verified, func(n int) {
		wd.kick()
		c.add(n)
		downloaded.Add(int64(n))
	})
	switch {
	case err != nil && ctx.Err() != nil:
		return false, ctx.Err()
	case err != nil && wd.fired():
		return true, fmt.Errorf("no data for %s: %w", o.stall, errStalled)
	}
	return err != nil, err
}

var errStalled = errors.New("download stalled")

// watchdog closes a body when ctx is done or no data arrived for a while,
// so that a stalled transfer fails (and is retried) instead of hanging.
type watchdog struct {
	timer *time.Timer
	stall time.Duration
	done  chan struct{}
	fire  atomic.Bool
}

func watch(ctx context.Context, body io.Closer, stall time.Duration) *watchdog {
	w := &watchdog{stall: stall, done: make(chan struct{})}
	w.timer = time.AfterFunc(stall, func() {
		w.fire.Store(true)
		body.Close()
	})
	go func() {
		select {
		case <-ctx.Done():
			body.Close()
		case <-w.done:
		}
	}()
	return w
}

func (w *watchdog) kick()       { w.timer.Reset(w.stall) }
func (w *watchdog) fired() bool { return w.fire.Load() }
func (w *watchdog) stop() {
	w.timer.Stop()
	close(w.done)
}

// transient reports whether a broken download may succeed when tried again.
// A request the transport gave up on is not tried again.
func transient(err error) bool {
	if re := (*retryError)(nil); errors.As(err, &re) {
		return false
	}
	return errors.Is(err, errStalled) || transientNet(err)
}
