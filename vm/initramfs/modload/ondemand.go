package modload

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strings"
)

// OnDemandPath is where the initramfs lists the modules it carries but
// loads only for the devices that need them, so that a VM without a NIC or
// a shared folder does not pay for their drivers at boot. One line per
// device pattern: the pattern, as the module's .modinfo has it
// ("virtio:d00000001v*"), then the module paths to load for it,
// dependencies first.
const OnDemandPath = "/etc/vmcompose/modules.ondemand"

// Rule says which modules a device matching Alias wants.
type Rule struct {
	Alias string
	Paths []string
}

// ParseOnDemand reads an on-demand manifest.
func ParseOnDemand(r io.Reader) ([]Rule, error) {
	var out []Rule
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if len(f) < 2 {
			return nil, fmt.Errorf("on-demand module manifest: %q names no module", sc.Text())
		}
		if _, err := path.Match(f[0], ""); err != nil {
			return nil, fmt.Errorf("on-demand module manifest: pattern %q: %w", f[0], err)
		}
		for _, p := range f[1:] {
			if !path.IsAbs(p) {
				return nil, fmt.Errorf("on-demand module manifest: %q is not an absolute path", p)
			}
		}
		out = append(out, Rule{Alias: f[0], Paths: f[1:]})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("on-demand module manifest: %w", err)
	}
	return out, nil
}

// Match returns, in order and without repeats, the module paths the rules
// give for the devices with the given modaliases.
func Match(rules []Rule, modaliases []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range rules {
		for _, a := range modaliases {
			if ok, _ := path.Match(r.Alias, a); !ok {
				continue
			}
			for _, p := range r.Paths {
				if !seen[p] {
					seen[p] = true
					out = append(out, p)
				}
			}
			break
		}
	}
	return out
}
