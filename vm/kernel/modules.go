package kernel

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vmcompose/vmcompose/internal/atomicfile"
)

// Module is a loadable kernel module.
type Module struct {
	// Name is the module's name with underscores ("virtio_blk").
	Name string
	// Path is the module file relative to the modules directory
	// ("kernel/drivers/block/virtio_blk.ko").
	Path string
	// Depends are the names of every module that must be loaded before
	// this one, direct and indirect.
	Depends []string
}

// GuestModules are the modules the guest wants when the kernel does not
// have them built in: virtio transports (MMIO for microvm, PCI for q35),
// block, network, serial control channel and entropy devices, the overlay
// root, shared folders (virtiofs, 9p), vsock, and the ACPI power button
// with evdev, through which a VMM asks the guest to shut down.
var GuestModules = []string{
	"virtio_mmio", "virtio_pci",
	"virtio_blk", "virtio_net", "virtio_console", "virtio_rng",
	"overlay", "ext4",
	"fuse", "virtiofs",
	"9p", "9pnet_virtio",
	"vmw_vsock_virtio_transport",
	"button", "evdev",
}

// ErrModuleNotFound is wrapped by Resolve for a module that is neither a
// file in the modules directory nor built into the kernel.
var ErrModuleNotFound = errors.New("kernel module not found")

// ModuleName normalises a module name or file name: "virtio-rng.ko" and
// "virtio_rng" both give "virtio_rng".
func ModuleName(s string) string {
	s = filepath.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

// Resolve returns the modules to load for names, with everything they
// depend on, dependencies first. Names of modules built into the kernel are
// left out. With optional set, names that cannot be found are left out too;
// without it they are an error wrapping ErrModuleNotFound. A kernel without
// a modules directory is taken to have everything built in.
func (k *Kernel) Resolve(names []string, optional bool) ([]Module, error) {
	if k.ModulesDir == "" {
		return nil, nil
	}
	all, err := k.modules()
	if err != nil {
		return nil, err
	}
	builtin, err := readBuiltin(k.ModulesDir)
	if err != nil {
		return nil, err
	}
	want := map[string]bool{}
	var missing []string
	for _, n := range names {
		n = ModuleName(n)
		m, ok := all[n]
		switch {
		case builtin[n]:
		case !ok && optional:
		case !ok:
			missing = append(missing, n)
		default:
			want[n] = true
			for _, d := range m.Depends {
				want[d] = true
			}
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("kernel %s: %w: %s (neither in %s nor built in)", k.Version, ErrModuleNotFound, strings.Join(missing, ", "), k.ModulesDir)
	}
	out := make([]Module, 0, len(want))
	for n := range want {
		m, ok := all[n]
		if !ok {
			return nil, fmt.Errorf("kernel %s: module dependency %s: %w", k.Version, n, ErrModuleNotFound)
		}
		out = append(out, m)
	}
	// Every module's dependency closure strictly contains its
	// dependencies' closures, so ordering by closure size puts
	// dependencies first; names break ties for a stable order.
	slices.SortFunc(out, func(a, b Module) int {
		if c := len(a.Depends) - len(b.Depends); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out, nil
}

// modules returns every module of the kernel by name, from modules.dep
// when there is one, else from the modules' own .modinfo sections.
func (k *Kernel) modules() (map[string]Module, error) {
	f, err := os.Open(filepath.Join(k.ModulesDir, "modules.dep"))
	if errors.Is(err, fs.ErrNotExist) {
		return ScanModules(k.ModulesDir)
	}
	if err != nil {
		return nil, fmt.Errorf("kernel %s modules: %w", k.Version, err)
	}
	defer f.Close()
	return parseModulesDep(f.Name(), bufio.NewScanner(f))
}

func parseModulesDep(name string, sc *bufio.Scanner) (map[string]Module, error) {
	out := map[string]Module{}
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		path, deps, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("%s: line %q has no colon", name, line)
		}
		m := Module{Name: ModuleName(path), Path: path}
		for _, d := range strings.Fields(deps) {
			m.Depends = append(m.Depends, ModuleName(d))
		}
		out[m.Name] = m
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return out, nil
}

// readBuiltin reads modules.builtin: the modules compiled into the kernel.
// A missing file means none.
func readBuiltin(dir string) (map[string]bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, "modules.builtin"))
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]bool{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("built-in modules: %w", err)
	}
	out := map[string]bool{}
	for _, l := range strings.Fields(string(b)) {
		out[ModuleName(l)] = true
	}
	return out, nil
}

// ScanModules reads every module file under dir (a lib/modules/<version>
// directory) and resolves their dependencies from the "depends=" field of
// each module's .modinfo section, as depmod does, so that hosts without
// depmod (macOS) can order modules. Compressed modules are not supported.
func ScanModules(dir string) (map[string]Module, error) {
	direct := map[string][]string{}
	paths := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() || !strings.Contains(name, ".ko") {
			return nil
		}
		if !strings.HasSuffix(name, ".ko") {
			return fmt.Errorf("module %s: compressed modules are not supported", p)
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		info, err := readModinfo(p)
		if err != nil {
			return err
		}
		n, deps := info.name, info.depends
		if _, dup := paths[n]; dup {
			return nil // first one wins, as with depmod's search order
		}
		paths[n] = filepath.ToSlash(rel)
		direct[n] = deps
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scanning modules in %s: %w", dir, err)
	}
	out := make(map[string]Module, len(paths))
	for n, p := range paths {
		closure, err := closureOf(n, direct, map[string]int{})
		if err != nil {
			return nil, fmt.Errorf("scanning modules in %s: %w", dir, err)
		}
		out[n] = Module{Name: n, Path: p, Depends: closure}
	}
	return out, nil
}

// closureOf returns every module n depends on, in load order.
func closureOf(n string, direct map[string][]string, state map[string]int) ([]string, error) {
	var order []string
	var visit func(m string, chain []string) error
	visit = func(m string, chain []string) error {
		switch state[m] {
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain, m), " -> "))
		case 2:
			return nil
		}
		deps, ok := direct[m]
		if !ok {
			return fmt.Errorf("module %s needs %s, which is missing", chain[len(chain)-1], m)
		}
		state[m] = 1
		for _, d := range deps {
			if err := visit(d, append(chain, m)); err != nil {
				return err
			}
		}
		state[m] = 2
		order = append(order, m)
		return nil
	}
	if err := visit(n, nil); err != nil {
		return nil, err
	}
	return order[:len(order)-1], nil // without n itself
}

// modinfo is what a module's .modinfo section says about it.
type modinfo struct {
	name    string
	depends []string // direct dependencies
	aliases []string // device patterns, e.g. "virtio:d00000001v*"
}

// readModinfo reads a module file's .modinfo section.
func readModinfo(path string) (modinfo, error) {
	f, err := elf.Open(path)
	if err != nil {
		return modinfo{}, fmt.Errorf("module %s: %w", path, err)
	}
	defer f.Close()
	s := f.Section(".modinfo")
	if s == nil {
		return modinfo{}, fmt.Errorf("module %s: no .modinfo section", path)
	}
	b, err := s.Data()
	if err != nil {
		return modinfo{}, fmt.Errorf("module %s: %w", path, err)
	}
	info := modinfo{name: ModuleName(path)}
	for _, kv := range bytes.Split(b, []byte{0}) {
		k, v, _ := strings.Cut(string(kv), "=")
		switch k {
		case "name":
			info.name = ModuleName(v)
		case "depends":
			for _, d := range strings.Split(v, ",") {
				if d != "" {
					info.depends = append(info.depends, ModuleName(d))
				}
			}
		case "alias":
			info.aliases = append(info.aliases, v)
		}
	}
	return info, nil
}

// Aliases returns the device patterns module m serves, as its .modinfo
// lists them ("virtio:d00000001v*" for virtio_net): a device whose
// modalias matches one of them wants the module.
func (k *Kernel) Aliases(m Module) ([]string, error) {
	info, err := readModinfo(filepath.Join(k.ModulesDir, m.Path))
	if err != nil {
		return nil, err
	}
	return info.aliases, nil
}

// WriteModulesDep writes dir/modules.dep in depmod's format from the
// modules' own metadata (see ScanModules): one line per module, its path,
// a colon and the paths of everything it depends on, last loaded first.
func WriteModulesDep(dir string) error {
	mods, err := ScanModules(dir)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(mods))
	for n := range mods {
		names = append(names, n)
	}
	slices.SortFunc(names, func(a, b string) int { return strings.Compare(mods[a].Path, mods[b].Path) })
	var buf bytes.Buffer
	for _, n := range names {
		m := mods[n]
		buf.WriteString(m.Path)
		buf.WriteByte(':')
		for _, d := range slices.Backward(m.Depends) {
			buf.WriteByte(' ')
			buf.WriteString(mods[d].Path)
		}
		buf.WriteByte('\n')
	}
	return atomicfile.WriteFile(filepath.Join(dir, "modules.dep"), buf.Bytes(), 0o644)
}
