package kernel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vmcompose/vmcompose/internal/atomicfile"
	"github.com/vmcompose/vmcompose/internal/flock"
)

// debArch maps Go architectures to Debian's names for them.
var debArch = map[string]string{"amd64": "amd64", "arm64": "arm64"}

type options struct {
	pkg    string
	logger *slog.Logger
	arch   string
}

// Option configures Fetch.
type Option func(*options) error

// WithPackage fetches the named Debian package instead of the one the
// linux-image-cloud-<arch> metapackage depends on. Both
// "linux-image-6.1.0-56-cloud-amd64-unsigned" and the signed name without
// "-unsigned" are accepted; the unsigned package is fetched.
func WithPackage(name string) Option {
	return func(o *options) error {
		if !strings.HasPrefix(name, "linux-image-") || strings.ContainsAny(name, " /=\t") {
			return fmt.Errorf("kernel package %q: want linux-image-<version>[-unsigned]", name)
		}
		o.pkg = name
		return nil
	}
}

// WithLogger makes Fetch log its steps to l; by default it is silent.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("nil logger")
		}
		o.logger = l
		return nil
	}
}

// Fetch puts Debian's cloud kernel for this machine's architecture into
// <storeDir>/kernel/<version>/ and returns it. It resolves the newest
// version from the linux-image-cloud-<arch> metapackage (see WithPackage),
// downloads the unsigned image package with `apt-get download`, unpacks it
// with `dpkg -x` (nothing is installed on the host), extracts the PVH
// vmlinux and writes modules.dep.
//
// Fetch of a version already in the store returns it without downloading.
// Concurrent fetches wait for each other. A failed or cancelled fetch leaves
// nothing behind but a temporary directory that the next fetch removes.
func Fetch(ctx context.Context, storeDir string, opts ...Option) (*Kernel, error) {
	o := options{logger: slog.New(slog.DiscardHandler), arch: runtime.GOARCH}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("fetching kernel: %w", err)
		}
	}
	arch, ok := debArch[o.arch]
	if !ok {
		return nil, fmt.Errorf("fetching kernel: no Debian cloud kernel for %s", o.arch)
	}
	if o.arch != "amd64" {
		// arm64 boots the uncompressed Image, which the package ships gzipped.
		return nil, fmt.Errorf("fetching kernel: unpacking a %s kernel is not implemented", o.arch)
	}
	pkg := o.pkg
	if pkg == "" {
		var err error
		if pkg, err = resolvePackage(ctx, arch); err != nil {
			return nil, fmt.Errorf("fetching kernel: %w", err)
		}
	}
	if !strings.HasSuffix(pkg, "-unsigned") {
		pkg += "-unsigned"
	}
	version := strings.TrimSuffix(strings.TrimPrefix(pkg, "linux-image-"), "-unsigned")
	k, err := fetch(ctx, storeDir, pkg, version, o)
	if err != nil {
		return nil, fmt.Errorf("fetching kernel %s: %w", version, err)
	}
	return k, nil
}

// resolvePackage asks apt which kernel package the cloud metapackage
// depends on now.
func resolvePackage(ctx context.Context, arch string) (string, error) {
	meta := "linux-image-cloud-" + arch
	out, err := run(ctx, "", "apt-cache", "depends", meta)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w (on hosts without apt, set %s to a kernel image)", meta, err, EnvKernel)
	}
	for _, l := range strings.Split(out, "\n") {
		dep, ok := strings.CutPrefix(strings.TrimSpace(l), "Depends: ")
		if ok && strings.HasPrefix(dep, "linux-image-") && strings.HasSuffix(dep, "-cloud-"+arch) {
			return dep, nil
		}
	}
	return "", fmt.Errorf("resolving %s: apt knows no such package or it names no kernel; run `apt-get update` first", meta)
}

func fetch(ctx context.Context, storeDir, pkg, version string, o options) (*Kernel, error) {
	if !filepath.IsLocal(version) || strings.ContainsRune(version, '/') {
		return nil, fmt.Errorf("version %q is not a plain name", version)
	}
	dir := filepath.Join(storeDir, SubDir)
	final := filepath.Join(dir, version)
	if k, err := OpenDir(final); err == nil {
		return k, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	unlock, err := flock.Lock(ctx, filepath.Join(dir, ".lock"), false)
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	defer unlock()
	if k, err := OpenDir(final); err == nil {
		return k, nil // another process fetched it while we waited
	}
	removeStale(dir, o.logger)
	if err := os.RemoveAll(final); err != nil { // an incomplete directory without kernel.json
		return nil, err
	}
	tmp, err := os.MkdirTemp(dir, ".fetch-"+version+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)

	o.logger.Info("downloading kernel package", "package", pkg)
	if _, err := run(ctx, tmp, "apt-get", "download", pkg); err != nil {
		return nil, fmt.Errorf("downloading %s (run `apt-get update` if apt's package lists are old): %w", pkg, err)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, "*.deb"))
	if len(debs) != 1 {
		return nil, fmt.Errorf("downloading %s: want one .deb, found %d", pkg, len(debs))
	}
	debVersion := ""
	if out, err := run(ctx, "", "dpkg-deb", "-f", debs[0], "Version"); err == nil {
		debVersion = strings.TrimSpace(out)
	}
	root := filepath.Join(tmp, "root")
	o.logger.Info("unpacking kernel package", "deb", filepath.Base(debs[0]))
	if _, err := run(ctx, "", "dpkg", "-x", debs[0], root); err != nil {
		return nil, fmt.Errorf("unpacking %s: %w", filepath.Base(debs[0]), err)
	}
	out := filepath.Join(tmp, "out")
	if err := layout(ctx, root, out, version, o.logger); err != nil {
		return nil, err
	}
	m := manifest{
		Version: version,
		Arch:    o.arch,
		Image:   "vmlinux",
		BzImage: "vmlinuz",
		Config:  "config",
		Modules: filepath.Join("lib", "modules", version),
		Source:  "debian:" + pkg,
	}
	if debVersion != "" {
		m.Source += "=" + debVersion
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := atomicfile.WriteFile(filepath.Join(out, ManifestFile), append(b, '\n'), 0o644); err != nil {
		return nil, err
	}
	if err := atomicfile.SyncDir(out); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := os.Rename(out, final); err != nil {
		return nil, err
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return nil, err
	}
	o.logger.Info("kernel ready", "version", version, "dir", final)
	return OpenDir(final)
}

// layout moves the unpacked package's kernel, config and modules into out
// and derives vmlinux and modules.dep.
func layout(ctx context.Context, root, out, version string, log *slog.Logger) error {
	if err := os.MkdirAll(filepath.Join(out, "lib", "modules"), 0o755); err != nil {
		return err
	}
	moves := [][2]string{
		{filepath.Join(root, "boot", "vmlinuz-"+version), filepath.Join(out, "vmlinuz")},
		{filepath.Join(root, "boot", "config-"+version), filepath.Join(out, "config")},
		{filepath.Join(root, "lib", "modules", version), filepath.Join(out, "lib", "modules", version)},
	}
	for _, mv := range moves {
		if err := os.Rename(mv[0], mv[1]); err != nil {
			return fmt.Errorf("kernel package layout: %w", err)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	log.Info("extracting vmlinux")
	if err := ExtractVmlinux(filepath.Join(out, "vmlinuz"), filepath.Join(out, "vmlinux")); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	log.Info("resolving module dependencies")
	return WriteModulesDep(filepath.Join(out, "lib", "modules", version))
}

// removeStale removes the temporary directories of fetches that died. The
// caller holds the lock, so no fetch is running.
func removeStale(dir string, log *slog.Logger) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".fetch-") {
			log.Debug("removing a dead fetch", "dir", e.Name())
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

// run runs a command and returns its standard output; its standard error
// becomes part of the error.
func run(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			return "", fmt.Errorf("%s: %w: %s", name, err, msg)
		}
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return stdout.String(), nil
}
