package volume

import (
	"fmt"
	"strings"

	"github.com/vmcompose/vmcompose/volume/driveropts"
)

// Sharing is the driver option that says what kind a volume is made as.
type Sharing = driveropts.Sharing

const (
	SharingAuto   = driveropts.Auto
	SharingShared = driveropts.Shared
	SharingDisk   = driveropts.Disk
)

// Options are a volume's driver options (driver_opts, or volume create's
// --opt), read.
type Options driveropts.Options

// ParseOptions reads driver options as driveropts.Parse does.
func ParseOptions(opts map[string]string) (Options, error) {
	o, err := driveropts.Parse(opts)
	return Options(o), err
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
