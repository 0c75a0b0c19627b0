package modload

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Load loads the module file at path with finit_module. A module that is
// already loaded is not an error.
func Load(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("loading module %s: %w", Name(path), err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("loading module %s: %w", Name(path), err)
	}
	return nil
}

// LoadAll loads every module the manifest at path lists, in order, and
// returns the names of those it loaded. It stops at the first failure.
func LoadAll(path string) ([]string, error) {
	mods, err := Read(path)
	if err != nil {
		return nil, err
	}
	var loaded []string
	for _, m := range mods {
		if err := Load(m); err != nil {
			return loaded, err
		}
		loaded = append(loaded, Name(m))
	}
	return loaded, nil
}
