package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// TempPrefix starts the name of every temporary file the package creates.
const TempPrefix = ".tmp-"

// File is a temporary file that replaces its target on Commit. It embeds
// the *os.File to write to. Call Cleanup (deferred) in any case: it
// removes the temporary file unless Commit succeeded.
type File struct {
	*os.File
	path      string
	perm      fs.FileMode
	committed bool
}

// Create starts a file that will replace path with mode perm (applied
// exactly, not masked by the umask). The directory must exist.
func Create(path string, perm fs.FileMode) (*File, error) {
	f, err := os.CreateTemp(filepath.Dir(path), TempPrefix+filepath.Base(path)+"-*")
	if err != nil {
		return nil, err
	}
	return &File{File: f, path: path, perm: perm}, nil
}

// Commit sets the mode, fsyncs and closes the file, renames it over the
// target and fsyncs the directory. On error the target is unchanged (or,
// if only the directory fsync failed, replaced but maybe not durably) and
// Cleanup still removes the temporary file.
func (f *File) Commit() error {
	err := f.Chmod(f.perm)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(f.Name(), f.path); err != nil {
		return err
	}
	f.committed = true
	return SyncDir(filepath.Dir(f.path))
}

// Cleanup closes and removes the temporary file unless Commit renamed it.
// It is safe to call more than once and after Commit.
func (f *File) Cleanup() {
	if f.committed {
		return
	}
	f.Close()
	os.Remove(f.Name())
}

// Write replaces path, mode perm, with what write writes to the file it is
// given (a plain *os.File: write, seek, WriteAt). If write fails, path is
// left as it was and the temporary file is removed.
func Write(path string, perm fs.FileMode, write func(f *os.File) error) error {
	f, err := Create(path, perm)
	if err != nil {
		return err
	}
	defer f.Cleanup()
	if err := write(f.File); err != nil {
		return err
	}
	return f.Commit()
}

// WriteFile replaces path, mode perm, with data.
func WriteFile(path string, data []byte, perm fs.FileMode) error {
	return Write(path, perm, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// SyncDir fsyncs a directory, so that the names created, renamed or
// removed in it are on disk. File systems that cannot sync a directory
// (EINVAL, ENOTSUP) are not an error.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
		return err
	}
	return nil
}
