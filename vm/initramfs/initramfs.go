package initramfs

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vmcompose/vmcompose/vm/initramfs/modload"
	"github.com/vmcompose/vmcompose/vm/kernel"

	"github.com/vmcompose/vmcompose/internal/atomicfile"
	"github.com/vmcompose/vmcompose/internal/flock"
)

// format changes whenever the archive's layout does, so that caches built
// by an older vmcompose are not reused.
const format = "vmcompose-initramfs-2"

// SubDir is the folder of the store that the CLI gives Build as its cache:
// <store>/initramfs.
const SubDir = "initramfs"

// Compression is how the archive is compressed.
type Compression int

const (
	// None writes a plain cpio: the fastest to boot, as the kernel only
	// copies it (measured under TCG, see the package tests).
	None Compression = iota
	// Gzip writes a gzip-compressed cpio: smaller, slower to boot.
	Gzip
)

type options struct {
	modules     []string
	onDemand    []string
	compression Compression
	keepSigs    bool
	logger      *slog.Logger
}

// Option configures Build.
type Option func(*options) error

// WithModules sets the modules the guest wants, by name, instead of
// kernel.GuestModules. Those built into the kernel or missing from it are
// left out; their dependencies are added.
func WithModules(names ...string) Option {
	return func(o *options) error {
		for _, n := range names {
			if n == "" || strings.ContainsAny(n, "/ \t\n") {
				return fmt.Errorf("module name %q", n)
			}
		}
		o.modules = names
		return nil
	}
}

// WithOnDemand packs modules (with their dependencies) that the guest loads
// only when a device wants them: vminit matches each virtio device's
// modalias against the modules' aliases (modload.LoadForDevices). Modules
// that WithModules loads anyway, or that are built in or missing, are left
// out.
func WithOnDemand(names ...string) Option {
	return func(o *options) error {
		for _, n := range names {
			if n == "" || strings.ContainsAny(n, "/ \t\n") {
				return fmt.Errorf("module name %q", n)
			}
		}
		o.onDemand = names
		return nil
	}
}

// WithCompression sets the archive's compression; the default is None.
func WithCompression(c Compression) Option {
	return func(o *options) error {
		if c != None && c != Gzip {
			return fmt.Errorf("compression %d", c)
		}
		o.compression = c
		return nil
	}
}

// WithModuleSignatures keeps the modules' signatures. By default Build
// strips them, because checking them costs the guest about 90 ms per boot
// under TCG, and they prove nothing the kernel command line, which the host
// also writes, could not undo; the kernel loads unsigned modules and notes
// it in its taint flags. Signatures are always kept for a kernel built with
// CONFIG_MODULE_SIG_FORCE.
func WithModuleSignatures() Option {
	return func(o *options) error {
		o.keepSigs = true
		return nil
	}
}

// WithLogger makes Build log to l; by default it is silent.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error {
		if l == nil {
			return errors.New("nil logger")
		}
		o.logger = l
		return nil
	}
}

// Build returns the path of an initramfs for kernel k with initBinary as
// /init, building it in cacheDir unless an identical one is there already.
// initBinary must be a statically linked executable (CGO_ENABLED=0).
//
// The archive holds:
//
//	/init                                the init binary, mode 0755
//	/dev/console                         character device 5:1, for the init's first output
//	/dev /proc /sys /run /tmp            empty mount points
//	/lib/modules/<version>/kernel/...    the modules the guest needs, with their dependencies
//	/etc/vmcompose/modules               those modules' paths in load order (modload.ManifestPath)
//	/etc/vmcompose/modules.ondemand      the WithOnDemand modules by device pattern (modload.OnDemandPath)
//
// Its name is a hash of the format, the init binary's content, the kernel
// version and the modules' paths, sizes and times, so a changed init or
// kernel gives a new file and an unchanged one is never rewritten.
// Concurrent builds of the same archive wait for each other; a failed or
// cancelled build leaves no file under the final name.
func Build(ctx context.Context, k *kernel.Kernel, initBinary, cacheDir string, opts ...Option) (string, error) {
	o := options{modules: kernel.GuestModules, logger: slog.New(slog.DiscardHandler)}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return "", fmt.Errorf("building initramfs: %w", err)
		}
	}
	p, err := build(ctx, k, initBinary, cacheDir, o)
	if err != nil {
		return "", fmt.Errorf("building initramfs for kernel %s: %w", k.Version, err)
	}
	return p, nil
}

func build(ctx context.Context, k *kernel.Kernel, initBinary, cacheDir string, o options) (string, error) {
	if err := checkStatic(initBinary); err != nil {
		return "", err
	}
	mods, err := k.Resolve(o.modules, true)
	if err != nil {
		return "", err
	}
	rules, err := onDemandRules(k, mods, o.onDemand)
	if err != nil {
		return "", err
	}
	if !o.keepSigs {
		cfg, err := k.Config()
		if err != nil {
			return "", err
		}
		o.keepSigs = cfg["CONFIG_MODULE_SIG_FORCE"] == "y"
	}
	key, err := cacheKey(k, initBinary, mods, rules, o)
	if err != nil {
		return "", err
	}
	name := key + ".cpio"
	if o.compression == Gzip {
		name += ".gz"
	}
	final := filepath.Join(cacheDir, name)
	if _, err := os.Stat(final); err == nil {
		return final, nil
	}
	if err := os.MkdirAll(cacheDir, 0o755); err != nil {
		return "", err
	}
	unlock, err := flock.Lock(ctx, filepath.Join(cacheDir, ".lock"), false)
	if err != nil {
		return "", fmt.Errorf("locking %s: %w", cacheDir, err)
	}
	defer unlock()
	if _, err := os.Stat(final); err == nil {
		return final, nil // built by another process while we waited
	}
	removeStale(cacheDir)
	err = atomicfile.Write(final, 0o644, func(f *os.File) error {
		return write(ctx, f, k, initBinary, mods, rules, o)
	})
	if err != nil {
		return "", err
	}
	o.logger.Info("initramfs built", "path", final, "modules", len(mods))
	return final, nil
}

// checkStatic refuses an init that needs a dynamic loader: the initramfs
// has none.
func checkStatic(p string) error {
	f, err := elf.Open(p)
	if err != nil {
		return fmt.Errorf("init binary: %w", err)
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return fmt.Errorf("init binary %s is dynamically linked: build it with CGO_ENABLED=0", p)
		}
	}
	return nil
}

func cacheKey(k *kernel.Kernel, initBinary string, mods []kernel.Module, rules []onDemandRule, o options) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\ncompression %d\nsignatures %v\nkernel %s\n", format, o.compression, o.keepSigs, k.Version)
	f, err := os.Open(initBinary)
	if err != nil {
		return "", fmt.Errorf("init binary: %w", err)
	}
	defer f.Close()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("init binary: %w", err)
	}
	for _, m := range append(mods, onDemandModules(rules)...) {
		fi, err := os.Stat(filepath.Join(k.ModulesDir, m.Path))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "\nmodule %s %d %d", m.Path, fi.Size(), fi.ModTime().UnixNano())
	}
	for _, r := range rules {
		fmt.Fprintf(h, "\non demand %s:", r.alias)
		for _, m := range r.mods {
			fmt.Fprintf(h, " %s", m.Path)
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

// write writes the archive to w.
func write(ctx context.Context, w io.Writer, k *kernel.Kernel, initBinary string, mods []kernel.Module, rules []onDemandRule, o options) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	out := io.Writer(bw)
	var zw *gzip.Writer
	if o.compression == Gzip {
		zw = gzip.NewWriter(bw)
		out = zw
	}
	cw := &newcWriter{w: out}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "etc", "etc/vmcompose"} {
		cw.Dir(d, 0o755)
	}
	cw.CharDev("dev/console", 0o600, 5, 1)
	if err := addFile(cw, "init", 0o755, initBinary); err != nil {
		return err
	}

	var manifest bytes.Buffer
	manifest.WriteString("# kernel modules in load order\n")
	dirs := map[string]bool{}
	var mkdirs func(d string)
	mkdirs = func(d string) {
		if d == "." || d == "/" || dirs[d] {
			return
		}
		mkdirs(path.Dir(d))
		dirs[d] = true
		cw.Dir(d, 0o755)
	}
	modRoot := path.Join("lib", "modules", k.Version)
	dst := func(m kernel.Module) string { return path.Join(modRoot, filepath.ToSlash(m.Path)) }
	for i, m := range append(mods, onDemandModules(rules)...) {
		if err := ctx.Err(); err != nil {
			return err
		}
		mkdirs(path.Dir(dst(m)))
		b, err := os.ReadFile(filepath.Join(k.ModulesDir, m.Path))
		if err != nil {
			return err
		}
		if !o.keepSigs {
			b = stripSignature(b)
		}
		cw.File(dst(m), 0o644, int64(len(b)), bytes.NewReader(b))
		if cw.err != nil {
			return cw.err
		}
		if i < len(mods) {
			manifest.WriteString("/" + dst(m) + "\n")
		}
	}
	cw.File(strings.TrimPrefix(modload.ManifestPath, "/"), 0o644, int64(manifest.Len()), &manifest)
	if len(rules) > 0 {
		var od bytes.Buffer
		od.WriteString("# device pattern, then the modules it wants, dependencies first\n")
		for _, r := range rules {
			od.WriteString(r.alias)
			for _, m := range r.mods {
				od.WriteString(" /" + dst(m))
			}
			od.WriteString("\n")
		}
		cw.File(strings.TrimPrefix(modload.OnDemandPath, "/"), 0o644, int64(od.Len()), &od)
	}
	if err := cw.Close(); err != nil {
		return err
	}
	if zw != nil {
		if err := zw.Close(); err != nil {
			return err
		}
	}
	return bw.Flush()
}

// moduleSigMagic ends a signed module: the PKCS#7 signature, then a
// struct module_signature (12 bytes, the signature's length big-endian in
// the last four), then this.
const moduleSigMagic = "~Module signature appended~\n"

// onDemandRule is one line of the on-demand manifest: the modules (in load
// order) that a device matching alias wants.
type onDemandRule struct {
	alias string
	mods  []kernel.Module
}

// onDemandRules resolves the on-demand modules names, leaving out those
// that boot (the modules loaded at boot) already loads.
func onDemandRules(k *kernel.Kernel, boot []kernel.Module, names []string) ([]onDemandRule, error) {
	loaded := map[string]bool{}
	for _, m := range boot {
		loaded[m.Name] = true
	}
	var rules []onDemandRule
	for _, n := range names {
		mods, err := k.Resolve([]string{n}, true)
		if err != nil {
			return nil, err
		}
		mods = slices.DeleteFunc(mods, func(m kernel.Module) bool { return loaded[m.Name] })
		if len(mods) == 0 {
			continue // built in, missing, or loaded at boot
		}
		aliases, err := k.Aliases(mods[len(mods)-1])
		if err != nil {
			return nil, err
		}
		for _, a := range aliases {
			rules = append(rules, onDemandRule{alias: a, mods: mods})
		}
	}
	return rules, nil
}

// onDemandModules returns the modules the rules name, each once.
func onDemandModules(rules []onDemandRule) []kernel.Module {
	var out []kernel.Module
	seen := map[string]bool{}
	for _, r := range rules {
		for _, m := range r.mods {
			if !seen[m.Name] {
				seen[m.Name] = true
				out = append(out, m)
			}
		}
	}
	return out
}

// stripSignature returns the module without its appended signature.
func stripSignature(b []byte) []byte {
	if !bytes.HasSuffix(b, []byte(moduleSigMagic)) || len(b) < len(moduleSigMagic)+12 {
		return b
	}
	info := b[len(b)-len(moduleSigMagic)-12 : len(b)-len(moduleSigMagic)]
	sigLen := int(binary.BigEndian.Uint32(info[8:]))
	end := len(b) - len(moduleSigMagic) - 12 - sigLen
	if end < 0 {
		return b
	}
	return b[:end]
}

func addFile(cw *newcWriter, name string, perm uint32, src string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	cw.File(name, perm, fi.Size(), f)
	return cw.err
}

// removeStale removes temporary files of builds that died. The caller
// holds the lock, so no build is running.
func removeStale(dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), atomicfile.TempPrefix) {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// Prune removes the archives in cacheDir except those named in keep (paths
// Build returned), and the leftovers of builds that died. A running VM does
// not need its archive: QEMU reads it whole at start. Prune waits for
// builds in progress.
func Prune(ctx context.Context, cacheDir string, keep ...string) error {
	unlock, err := flock.Lock(ctx, filepath.Join(cacheDir, ".lock"), false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("pruning initramfs cache %s: %w", cacheDir, err)
	}
	defer unlock()
	kept := map[string]bool{}
	for _, k := range keep {
		kept[filepath.Base(k)] = true
	}
	removeStale(cacheDir)
	entries, err := os.ReadDir(cacheDir)
	if err != nil {
		return fmt.Errorf("pruning initramfs cache %s: %w", cacheDir, err)
	}
	for _, e := range entries {
		n := e.Name()
		if kept[n] || strings.HasPrefix(n, ".") || !(strings.HasSuffix(n, ".cpio") || strings.HasSuffix(n, ".cpio.gz")) {
			continue
		}
		if err := os.Remove(filepath.Join(cacheDir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("pruning initramfs cache: %w", err)
		}
	}
	return nil
}
