// Package driveropts reads a named volume's driver options (compose's
// driver_opts, `volume create --opt`): the one reading of them, shared by
// the planner, which blocks what the store would refuse, and the volume
// store, which makes volumes by them. It does no I/O.
package driveropts

import (
	"fmt"
	"maps"
	"slices"

	"github.com/docker/go-units"
)

// Sharing says what kind a volume is made as.
type Sharing string

const (
	// Auto (the default) makes a disk volume; the planner makes it shared
	// when a second VM would mount it beside a writer.
	Auto   Sharing = "auto"
	Shared Sharing = "shared"
	Disk   Sharing = "disk"
)

// Valid reports whether s is a sharing mode.
func (s Sharing) Valid() bool { return s == Auto || s == Shared || s == Disk }

// Options are a volume's driver options, read.
type Options struct {
	Size    int64 // 0: the store's default size
	Sharing Sharing
}

// Parse reads driver options: size (a disk's size, such as 10g) and
// sharing (auto, shared or disk). Any other option is an error that names
// it.
func Parse(opts map[string]string) (Options, error) {
	o := Options{Sharing: Auto}
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
			if o.Sharing = Sharing(v); !o.Sharing.Valid() {
				return Options{}, fmt.Errorf("driver_opts.sharing %q: want auto, shared or disk", v)
			}
		default:
			return Options{}, fmt.Errorf("driver_opts.%s is not supported: the options are size and sharing", k)
		}
	}
	return o, nil
}
