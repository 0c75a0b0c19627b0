package kernel

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// Environment variables that Find reads.
const (
	// EnvKernel names the kernel to boot instead of the store's newest: a
	// kernel directory (one with kernel.json), a kernel image file (an ELF
	// vmlinux with a PVH note, or a bzImage on amd64), or the version name
	// of a kernel in the store.
	EnvKernel = "VMCOMPOSE_KERNEL"
	// EnvKernelModules is the modules directory (lib/modules/<version>) of
	// the kernel image that EnvKernel names. Without it such a kernel is
	// taken to have every driver the guest needs built in.
	EnvKernelModules = "VMCOMPOSE_KERNEL_MODULES"
)

// SubDir is the folder of the store that holds kernels.
const SubDir = "kernel"

// ManifestFile is the name of the manifest in a kernel directory.
const ManifestFile = "kernel.json"

// SetupCommand is the command that puts a kernel into the store.
const SetupCommand = "vmcompose setup"

// ErrNotFound is returned by Find when no kernel is configured or stored.
var ErrNotFound = errors.New("no guest kernel")

// Kernel is a guest kernel on disk.
type Kernel struct {
	// Version is the kernel release (uname -r), e.g. "6.1.0-56-cloud-amd64".
	// It names the modules directory inside the guest.
	Version string
	// Arch is the Go name of the architecture the kernel runs: "amd64",
	// later "arm64".
	Arch string
	// Image is the file a VMM boots. On amd64 it is an ELF vmlinux with a
	// PVH entry note (or, for a kernel named by VMCOMPOSE_KERNEL, possibly
	// a bzImage).
	Image string
	// BzImage is the compressed bzImage the image was extracted from, or ""
	// when there is none.
	BzImage string
	// ConfigFile is the kernel's build config (.config), or "" when unknown.
	ConfigFile string
	// ModulesDir is the lib/modules/<Version> directory, or "" when the
	// kernel comes without modules.
	ModulesDir string
	// Dir is the kernel's directory in the store, or "" for a kernel named
	// by file.
	Dir string
	// Source says where the kernel came from, e.g.
	// "debian:linux-image-6.1.0-56-cloud-amd64-unsigned=6.1.192-2" or
	// "env:VMCOMPOSE_KERNEL".
	Source string
}

// manifest is kernel.json. Paths are relative to the kernel directory.
type manifest struct {
	Version string `json:"version"`
	Arch    string `json:"arch"`
	Image   string `json:"image"`
	BzImage string `json:"bzImage,omitempty"`
	Config  string `json:"config,omitempty"`
	Modules string `json:"modules,omitempty"`
	Source  string `json:"source,omitempty"`
}

// Find returns the kernel to boot: the one VMCOMPOSE_KERNEL names, else the
// newest kernel for this machine's architecture in <storeDir>/kernel. When
// there is none the error wraps ErrNotFound and says how to get one.
func Find(storeDir string) (*Kernel, error) {
	if v := os.Getenv(EnvKernel); v != "" {
		k, err := fromEnv(storeDir, v, os.Getenv(EnvKernelModules))
		if err != nil {
			return nil, fmt.Errorf("kernel from %s=%s: %w", EnvKernel, v, err)
		}
		return k, nil
	}
	dir := filepath.Join(storeDir, SubDir)
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("listing kernels: %w", err)
	}
	var found []*Kernel
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		k, err := OpenDir(filepath.Join(dir, e.Name()))
		if err != nil {
			continue // incomplete or foreign: not a candidate
		}
		if k.Arch == runtime.GOARCH {
			found = append(found, k)
		}
	}
	if len(found) == 0 {
		return nil, notFoundError(dir)
	}
	slices.SortFunc(found, func(a, b *Kernel) int { return CompareVersions(a.Version, b.Version) })
	return found[len(found)-1], nil
}

func notFoundError(dir string) error {
	return fmt.Errorf("%w for %s in %s: run `%s` (or `go run ./scripts/fetch-kernel` in a vmcompose checkout) "+
		"to fetch Debian's cloud kernel into the store, or set %s to a kernel image (a PVH vmlinux or bzImage) "+
		"and %s to its lib/modules/<version> directory",
		ErrNotFound, runtime.GOARCH, dir, SetupCommand, EnvKernel, EnvKernelModules)
}

func fromEnv(storeDir, v, modules string) (*Kernel, error) {
	if !strings.ContainsRune(v, filepath.Separator) {
		if k, err := OpenDir(filepath.Join(storeDir, SubDir, v)); err == nil {
			return k, nil
		}
	}
	fi, err := os.Stat(v)
	if err != nil {
		return nil, err
	}
	if fi.IsDir() {
		return OpenDir(v)
	}
	k, err := Open(v, modules)
	if err != nil {
		return nil, err
	}
	k.Source = "env:" + EnvKernel
	return k, nil
}

// OpenDir opens the kernel directory dir, which must hold kernel.json.
func OpenDir(dir string) (*Kernel, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("kernel directory %s: %w", dir, err)
	}
	var m manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("kernel manifest %s: %w", filepath.Join(dir, ManifestFile), err)
	}
	if m.Version == "" || m.Arch == "" || m.Image == "" {
		return nil, fmt.Errorf("kernel manifest %s: version, arch and image are required", filepath.Join(dir, ManifestFile))
	}
	k := &Kernel{Version: m.Version, Arch: m.Arch, Dir: dir, Source: m.Source}
	for _, f := range []struct {
		dst  *string
		rel  string
		name string
	}{{&k.Image, m.Image, "image"}, {&k.BzImage, m.BzImage, "bzImage"}, {&k.ConfigFile, m.Config, "config"}, {&k.ModulesDir, m.Modules, "modules"}} {
		if f.rel == "" {
			continue
		}
		if !filepath.IsLocal(f.rel) {
			return nil, fmt.Errorf("kernel manifest %s: %s %q is not a path inside the directory", filepath.Join(dir, ManifestFile), f.name, f.rel)
		}
		*f.dst = filepath.Join(dir, f.rel)
	}
	if _, err := os.Stat(k.Image); err != nil {
		return nil, fmt.Errorf("kernel %s: %w", k.Version, err)
	}
	return k, nil
}

// Open describes a kernel given by its image file (an ELF vmlinux must have
// a PVH entry note) and, optionally, its
// lib/modules/<version> directory. The version is the modules directory's
// name, else the one a bzImage records, else "unknown". A file named
// "config" or "config-<version>" beside the image or in the modules
// directory's parent's boot/ folder is taken as its build config.
func Open(image, modulesDir string) (*Kernel, error) {
	image, err := filepath.Abs(image)
	if err != nil {
		return nil, err
	}
	k := &Kernel{Image: image, Arch: runtime.GOARCH, Version: "unknown"}
	kind, version, err := identify(image)
	if err != nil {
		return nil, err
	}
	switch kind {
	case kindBzImage:
		k.BzImage = image
	case kindELF:
		if err := CheckPVH(image); err != nil {
			return nil, fmt.Errorf("%w (use the bzImage instead)", err)
		}
	}
	if version != "" {
		k.Version = version
	}
	if modulesDir != "" {
		if k.ModulesDir, err = filepath.Abs(modulesDir); err != nil {
			return nil, err
		}
		if _, err := os.Stat(k.ModulesDir); err != nil {
			return nil, fmt.Errorf("kernel modules: %w", err)
		}
		k.Version = filepath.Base(k.ModulesDir)
	}
	for _, c := range []string{
		filepath.Join(filepath.Dir(image), "config-"+k.Version),
		filepath.Join(filepath.Dir(image), "config"),
		filepath.Join(filepath.Dir(image), "boot", "config-"+k.Version),
		"/boot/config-" + k.Version,
	} {
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() {
			k.ConfigFile = c
			break
		}
	}
	return k, nil
}

// Config reads the kernel's build config: symbol (with its CONFIG_ prefix)
// to value ("y", "m", a number or a quoted string). Symbols that are not set
// are absent. A kernel without a config file gives an empty map.
func (k *Kernel) Config() (map[string]string, error) {
	out := map[string]string{}
	if k.ConfigFile == "" {
		return out, nil
	}
	f, err := os.Open(k.ConfigFile)
	if err != nil {
		return nil, fmt.Errorf("kernel config: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "CONFIG_") {
			continue
		}
		if sym, val, ok := strings.Cut(line, "="); ok {
			out[sym] = val
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kernel config %s: %w", k.ConfigFile, err)
	}
	return out, nil
}

// CompareVersions orders kernel release strings by their numeric parts
// ("6.1.0-56" after "6.1.0-9"), then as text.
func CompareVersions(a, b string) int {
	pa, pb := versionParts(a), versionParts(b)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		na, ea := strconv.Atoi(pa[i])
		nb, eb := strconv.Atoi(pb[i])
		switch {
		case ea == nil && eb == nil:
			if na != nb {
				return na - nb
			}
		case ea == nil:
			return 1
		case eb == nil:
			return -1
		default:
			if c := strings.Compare(pa[i], pb[i]); c != 0 {
				return c
			}
		}
	}
	return len(pa) - len(pb)
}

func versionParts(v string) []string {
	return strings.FieldsFunc(v, func(r rune) bool { return r == '.' || r == '-' || r == '+' || r == '~' })
}
