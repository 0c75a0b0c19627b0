package vm

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// ExtractVolume copies the data of the volume disk img (its VolumeData
// directory, or the whole root but lost+found for an image without the
// VolumeLabel, see VolumeDataDir) into the directory dst, which must not
// exist, without mounting anything on the host: an image is written by
// guests, and a crafted file system must not reach the host's kernel.
//
// It works on a copy of img, which e2fsck first repairs (it replays the
// journal of a VM that was killed, and makes every name unique in its
// directory, so that debugfs's rdump never opens a path through a
// symlink it made itself). rdump then writes the tree, keeping owners,
// modes, the seconds of modification and access times, and symlinks; the
// modes' setuid, setgid and sticky bits, which rdump drops, and the
// owners of symlinks are set again afterwards. What it does not keep:
// hard links (each name gets its own copy), sparseness, sub-second times,
// the times of symlinks, extended attributes, and device, fifo and socket
// files, which are left out. It needs e2fsck and debugfs (e2fsprogs). On
// error nothing is left behind; img is never changed.
func ExtractVolume(ctx context.Context, img, dst string) error {
	sub, err := VolumeDataDir(img)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("extracting %s: %s exists", img, dst)
	}
	work, err := os.MkdirTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".extract-")
	if err != nil {
		return fmt.Errorf("extracting %s: %w", img, err)
	}
	defer os.RemoveAll(work)
	disk := filepath.Join(work, "disk.img")
	if err := checkedCopy(ctx, img, disk); err != nil {
		return fmt.Errorf("extracting %s: %w", img, err)
	}
	out := filepath.Join(work, "out")
	if err := rdump(ctx, disk, sub, out); err != nil {
		return fmt.Errorf("extracting %s: %w", img, err)
	}
	if err := os.Rename(out, dst); err != nil {
		return fmt.Errorf("extracting %s: %w", img, err)
	}
	return nil
}

// checkedCopy copies the disk img to path, sparse, and repairs the copy.
func checkedCopy(ctx context.Context, img, path string) error {
	if out, err := exec.CommandContext(ctx, "cp", "--sparse=always", img, path).CombinedOutput(); err != nil {
		return fmt.Errorf("copying the disk: %w: %s", err, strings.TrimSpace(string(out)))
	}
	// 0: clean; 1: errors corrected, which a copy of a disk in use may
	// have (a journal to replay); above: not repaired.
	_, err := e2fsprogs(ctx, "e2fsck", "-f", "-y", path)
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 1 {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("checking the disk: %w", err)
	}
	return nil
}

// rdump writes the directory sub of the ext4 disk (its root when empty)
// to out, which it creates, then sets again what rdump does not keep.
func rdump(ctx context.Context, disk, sub, out string) error {
	root, err := listDir(ctx, disk, "/"+sub)
	if err != nil {
		return err
	}
	var names []string
	var self dirEntry
	for _, e := range root {
		switch {
		case e.name == ".":
			self = e
		case e.name == ".." || (sub == "" && e.name == "lost+found"):
		default:
			names = append(names, e.name)
		}
	}
	if self.ino == 0 {
		return fmt.Errorf("debugfs: no directory /%s", sub)
	}
	if err := os.Mkdir(out, 0o700); err != nil {
		return err
	}
	if len(names) > 0 {
		// rdump writes each named directory of the disk into the
		// native directory, under its name.
		cmds := make([]string, len(names))
		for i, n := range names {
			cmds[i] = fmt.Sprintf("rdump %s %s", debugfsQuote(filepath.Join("/", sub, n)), debugfsQuote(out))
		}
		if err := debugfsBatch(ctx, disk, cmds, func(string) {}); err != nil {
			return err
		}
	}
	if err := fixModes(ctx, disk, out, self); err != nil {
		return err
	}
	return setMode(out, self)
}

// dirEntry is one line of debugfs's `ls -p`: /inode/mode/uid/gid/name/size/.
type dirEntry struct {
	ino      uint64
	mode     uint32
	uid, gid int
	name     string
}

// parseEntry reads an `ls -p` line, or says it is not one.
func parseEntry(line string) (dirEntry, bool) {
	f := strings.Split(line, "/")
	if len(f) != 8 || f[0] != "" || f[7] != "" || f[5] == "" {
		return dirEntry{}, false
	}
	ino, err1 := strconv.ParseUint(f[1], 10, 64)
	mode, err2 := strconv.ParseUint(f[2], 8, 32)
	uid, err3 := strconv.Atoi(f[3])
	gid, err4 := strconv.Atoi(f[4])
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return dirEntry{}, false
	}
	return dirEntry{ino: ino, mode: uint32(mode), uid: uid, gid: gid, name: f[5]}, true
}

// listDir lists the directory dir of disk.
func listDir(ctx context.Context, disk, dir string) ([]dirEntry, error) {
	var out []dirEntry
	err := debugfsBatch(ctx, disk, []string{"ls -p " + debugfsQuote(dir)}, func(line string) {
		if e, ok := parseEntry(line); ok {
			out = append(out, e)
		}
	})
	return out, err
}

// fixModes walks the tree rdump wrote at out from the disk's directory
// top, a level at a time (one debugfs per level), and sets each entry's
// owner and full mode again. Only what is on the host as the type the
// disk says is touched, and never through a symlink.
func fixModes(ctx context.Context, disk, out string, top dirEntry) error {
	level := map[uint64]string{top.ino: out}
	for len(level) > 0 {
		var cmds []string
		order := make([]string, 0, len(level))
		for ino, path := range level {
			cmds = append(cmds, fmt.Sprintf("ls -p <%d>", ino))
			order = append(order, path)
		}
		next := map[uint64]string{}
		i := -1
		err := debugfsBatch(ctx, disk, cmds, func(line string) {
			if strings.HasPrefix(line, "debugfs: ls -p <") {
				i++
				return
			}
			e, ok := parseEntry(line)
			if !ok || i < 0 || e.name == "." || e.name == ".." || strings.ContainsAny(e.name, "/\x00") {
				return
			}
			path := filepath.Join(order[i], e.name)
			if setMode(path, e) == nil && e.mode&0o170000 == 0o040000 {
				next[e.ino] = path
			}
		})
		if err != nil {
			return err
		}
		level = next
	}
	return nil
}

// setMode gives path e's owner and mode when path is on the host what e
// is on the disk (a directory, a file, a symlink), and errs otherwise.
func setMode(path string, e dirEntry) error {
	fi, err := os.Lstat(path)
	if err != nil {
		return err
	}
	kind := e.mode & 0o170000
	switch {
	case kind == 0o120000 && fi.Mode()&os.ModeSymlink != 0:
		return os.Lchown(path, e.uid, e.gid)
	case kind == 0o040000 && fi.IsDir(), kind == 0o100000 && fi.Mode().IsRegular():
		if err := os.Lchown(path, e.uid, e.gid); err != nil {
			return err
		}
		// chmod after chown, which clears setuid and setgid.
		return os.Chmod(path, os.FileMode(e.mode&0o777)|goModeBits(e.mode))
	}
	return fmt.Errorf("%s is not what the disk has", path)
}

// goModeBits maps the setuid, setgid and sticky bits of a Unix mode to
// os.FileMode's.
func goModeBits(mode uint32) os.FileMode {
	var m os.FileMode
	if mode&0o4000 != 0 {
		m |= os.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= os.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= os.ModeSticky
	}
	return m
}

// debugfsBatch runs debugfs's commands on disk (read-only) from a command
// file and hands each line of its output to line; with -f, debugfs echoes
// every command as "debugfs: <command>" before its output. Errors it
// reports on stderr fail the batch.
func debugfsBatch(ctx context.Context, disk string, cmds []string, line func(string)) error {
	f, err := os.CreateTemp(filepath.Dir(disk), "debugfs-*.cmd")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(strings.Join(cmds, "\n") + "\n"); err != nil {
		f.Close()
		return err
	}
	f.Close()
	bin, err := e2fsprogsPath("debugfs")
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "-f", f.Name(), disk)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("debugfs: %w", err)
	}
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line(sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("debugfs: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	// The version banner goes to stderr; anything after it is an error.
	if _, msg, _ := strings.Cut(strings.TrimSpace(stderr.String()), "\n"); msg != "" {
		return fmt.Errorf("debugfs: %s", msg)
	}
	return nil
}

// debugfsQuote quotes a path for a debugfs command line, whose parser
// (libss) reads "" inside quotes as one quote.
func debugfsQuote(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}
