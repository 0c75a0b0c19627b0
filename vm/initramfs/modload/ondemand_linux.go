package modload

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// LoadForDevices loads the modules that the on-demand manifest at manifest
// gives for the devices with the given modaliases, and returns the names
// of those it loaded. A missing manifest loads nothing.
func LoadForDevices(manifest string, modaliases []string) ([]string, error) {
	f, err := os.Open(manifest)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("on-demand module manifest: %w", err)
	}
	rules, err := ParseOnDemand(f)
	f.Close()
	if err != nil {
		return nil, err
	}
	var loaded []string
	for _, p := range Match(rules, modaliases) {
		if err := Load(p); err != nil {
			return loaded, err
		}
		loaded = append(loaded, Name(p))
	}
	return loaded, nil
}

// Modaliases returns the modalias of every device on a bus ("virtio"),
// from /sys/bus/<bus>/devices/*/modalias.
func Modaliases(bus string) []string {
	files, _ := filepath.Glob(filepath.Join("/sys/bus", bus, "devices", "*", "modalias"))
	var out []string
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil {
			out = append(out, strings.TrimSpace(string(b)))
		}
	}
	return out
}
