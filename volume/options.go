package volume

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/docker/go-units"
)

// Sharing is the driver option that says what kind a volume is made as.
type Sharing string

const (
	// SharingAuto (the default) makes a disk volume; the caller may make
	// it shared when several VMs write it.
	SharingAuto   Sharing = "auto"
	SharingShared Sharing = "shared"
	SharingDisk   Sharing = "disk"
)

// Options are a volume's driver options (driver_opts, or volume create's
// --opt), read.
type Options struct {
	Size    int64 // 0: DefaultSize
	Sharing Sharing
}

// ParseOptions reads driver options: size (a disk's size, such as 10g)
// and sharing (auto, shared or disk). Any other option is an error that
// names it.
func ParseOptions(opts map[string]string) (Options, error) {
	o := Options{Sharing: SharingAuto}
	for _, k := range slices.Sorted(maps.Keys(opts)) {
		v := opts[k]
		switch k {
		case "size":
			n, err := units.RAMInBytes(v)
			if err != nil || n <= 0 {
				return Options{}, fmt.Errorf("driver_opts.size %q: want a size such as 10g", v)
			}
			o.Size = n
		case "sharing":
			switch s := Sharing(v); s {
			case SharingAuto, SharingShared, SharingDisk:
				o.Sharing = s
			default:
				return Options{}, fmt.Errorf("driver_opts.sharing %q: want auto, shared or disk", v)
			}
		default:
			return Options{}, fmt.Errorf("driver_opts.%s is not supported: the options are size and sharing", k)
		}
	}
	return o, nil
}

// Kind is the kind a volume with these options is made as: shared only
// when asked for.
func (o Options) Kind() Kind {
	if o.Sharing == SharingShared {
		return Shared
	}
	return Disk
}

// ParseOpts reads KEY=VALUE pairs (volume create's --opt and --label).
func ParseOpts(pairs []string, what string) (map[string]string, error) {
	m := map[string]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want KEY=VALUE", what, p)
		}
		m[k] = v
	}
	return m, nil
}
