// Package importrules holds one test: the import rules of the package docs,
// in one table, checked against `go list -deps` for Linux and macOS.
package importrules

import (
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const mod = "github.com/vmcompose/vmcompose/"

// rule says what one package may import. own lists the packages of this
// module it may depend on (directly or not); nil means any. standardOnly
// allows nothing outside the standard library but the modules listed in
// also. noIO forbids I/O packages in the package and in every package of
// this module it imports. banned are import path prefixes it must not
// depend on at all.
type rule struct {
	pkg          string
	why          string
	own          []string
	standardOnly bool
	also         []string
	noIO         bool
	banned       []string
	linuxOnly    bool
}

var rules = []rule{
	{pkg: "planner", why: "the planner is a pure function of desired and observed state", noIO: true},
	{pkg: "oci/rootfs", why: "root filesystems know nothing of VMs, compose or the CLI",
		own: []string{"oci/rootfs/internal/ext4", "internal/flock", "internal/atomicfile"}},
	{pkg: "oci/rootfs/internal/ext4", why: "the ext4 writer is plain Go", standardOnly: true},
	{pkg: "vm/kernel", why: "the kernel knows nothing of VMs, compose or the store's image layout",
		own: []string{"internal/flock", "internal/atomicfile"}},
	{pkg: "vm/initramfs", why: "the initramfs knows the kernel and the guest's module loader only",
		own: []string{"vm/kernel", "vm/initramfs/modload", "internal/flock", "internal/atomicfile"}},
	{pkg: "vm/initramfs/modload", why: "the guest loads modules with it", standardOnly: true, also: []string{"golang.org/x/sys"}},
	{pkg: "volume", why: "the volume store knows ext4 images (vm), not compose, VM backends or the CLI",
		own: []string{"vm", "volume/driveropts", "internal/atomicfile"}},
	{pkg: "volume/driveropts", why: "the planner reads driver options with it", noIO: true, own: []string{}},
	{pkg: "vm", why: "VM backends know nothing of compose",
		banned: []string{mod + "project", mod + "planner", mod + "reconcile", mod + "oci", "github.com/compose-spec/"}},
	{pkg: "vm/qemu", why: "VM backends know nothing of compose", linuxOnly: true,
		banned: []string{mod + "project", mod + "planner", mod + "reconcile", mod + "oci", "github.com/compose-spec/"}},
	{pkg: "network", why: "the network knows nothing of VMs, the supervisor or the CLI",
		own: []string{"network/"}},
	{pkg: "network/netproc", why: "the network process knows nothing of the supervisor, the store or the CLI",
		banned: []string{mod + "reconcile", mod + "supervisor", mod + "cmd/", mod + "oci"}},
	{pkg: "reconcile", why: "observing and executing plans knows nothing of the daemon that runs them or of the CLI",
		banned: []string{mod + "supervisor", mod + "cmd/"}},
	{pkg: "supervisor", why: "the daemon uses the vm.Driver interface, never a backend, and knows nothing of the CLI",
		banned: []string{mod + "cmd/", mod + "vm/qemu"}},
	{pkg: "devloop", why: "applying watch batches goes through the supervisor's client, never the CLI or a VM backend",
		banned: []string{mod + "cmd/", mod + "vm/qemu"}},
	{pkg: "watch", why: "watching host paths knows nothing of VMs, the agent or the CLI", own: []string{"internal/hostfile"}},
	{pkg: "internal/atomicfile", why: "any package may write files with it", standardOnly: true},
	{pkg: "internal/hostfile", why: "any package may read host files with it", standardOnly: true},
	{pkg: "guest/agent", why: "host and guest share the protocol; it depends on neither side", own: []string{}},
	{pkg: "internal/terminal", why: "the terminal knows the host's terminal, not the agent or the CLI", own: []string{}},
	{pkg: "internal/storagebench", why: "the storage workload runs alike on the host and in any guest", linuxOnly: true,
		standardOnly: true, also: []string{"golang.org/x/sys"}},
	{pkg: "cmd/vminit", why: "the guest must not depend on host packages", linuxOnly: true,
		own: []string{"guest/", "vm/initramfs/modload"}},
}

// ioPackages are what the planner must not touch.
var ioPackages = []string{"os", "os/exec", "os/signal", "net", "net/http", "io/fs", "io/ioutil", "syscall", "path/filepath"}

type listed struct {
	ImportPath string
	Standard   bool
	Imports    []string
}

func list(t *testing.T, goos, pkg string) []listed {
	t.Helper()
	cmd := exec.Command("go", "list", "-deps", "-json=ImportPath,Standard,Imports", mod+pkg)
	cmd.Env = append(cmd.Environ(), "GOOS="+goos)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s (GOOS=%s): %v", pkg, goos, err)
	}
	var pkgs []listed
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p listed
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

func TestImportRules(t *testing.T) {
	touchSources(t)
	for _, r := range rules {
		for _, goos := range []string{"linux", "darwin"} {
			if r.linuxOnly && goos != "linux" {
				continue
			}
			deps := list(t, goos, r.pkg)
			if len(deps) == 0 {
				t.Fatalf("%s: go list found nothing: the rule checks nothing", r.pkg)
			}
			for _, d := range deps {
				r.check(t, goos, d)
			}
		}
	}
}

func (r rule) check(t *testing.T, goos string, d listed) {
	rest, ours := strings.CutPrefix(d.ImportPath, mod)
	self := ours && rest == r.pkg
	fail := func(msg string) {
		t.Helper()
		t.Errorf("%s (GOOS=%s) depends on %s: %s; %s", r.pkg, goos, d.ImportPath, msg, r.why)
	}
	for _, b := range r.banned {
		if strings.HasPrefix(d.ImportPath, b) {
			fail("banned")
		}
	}
	if ours && !self && r.own != nil && !slices.ContainsFunc(r.own, func(o string) bool {
		return rest == o || (strings.HasSuffix(o, "/") && strings.HasPrefix(rest, o))
	}) {
		fail(fmt.Sprintf("it may use only %v of this module", r.own))
	}
	if r.standardOnly && !d.Standard && !self && !slices.ContainsFunc(r.also, func(a string) bool { return strings.HasPrefix(d.ImportPath, a) }) {
		fail("only the standard library is allowed")
	}
	if r.noIO && ours {
		for _, imp := range d.Imports {
			if slices.Contains(ioPackages, imp) {
				t.Errorf("%s (GOOS=%s): %s imports %s: %s", r.pkg, goos, d.ImportPath, imp, r.why)
			}
		}
	}
}

// touchSources reads every Go file of the module: go test caches a result
// by the files a test opened, and this test learns the imports through
// `go list`, which it does not see.
func touchSources(t *testing.T) {
	err := filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) && path != "../.." {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") {
			_, err = os.ReadFile(path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
