package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/internal/atomicfile"
	"github.com/vmcompose/vmcompose/vm"
)

// MakeShared turns the disk volume name into a shared one: its data is
// copied out of the image into shared/data, volume.json says shared, and
// the image goes. moved is false when it was shared already. It needs
// root (to keep owners) and a volume no QEMU has open; the caller makes
// sure no stopped VM still names the image.
//
// The image is read by debugfs, never mounted on the host: its contents
// were written by guests, and are untrusted. It is replayed (e2fsck -p)
// and checked (e2fsck -fn) first, so that no name in it can lead out of
// the copy. The copy keeps owners, modes, modification times (to the
// second), symlinks (with their owners), hard links, FIFOs and sockets;
// it loses extended attributes (virtiofs does not pass them to the guest
// anyway), holes of sparse files, the times of symlinks, FIFOs, sockets
// and of the data directory itself. An image holding device nodes is refused.
func (s *Store) MakeShared(ctx context.Context, name string) (moved bool, err error) {
	v, err := s.Get(name)
	if err != nil || v.Kind == Shared {
		return false, err
	}
	if os.Geteuid() != 0 {
		return false, fmt.Errorf("volume %s: making it shared needs root, to keep its files' owners", name)
	}
	img := v.Mountpoint()
	if open, _, err := Opened(img); err != nil || open {
		return false, cmpErr(err, fmt.Errorf("volume %s is in use by a VM: stop it first", name))
	}
	release, err := holdOff(img)
	if err != nil {
		return false, err
	}
	defer release()
	if _, err := s.Recover(ctx, v); err != nil {
		return false, err
	}
	if err := vm.CheckVolume(ctx, img); err != nil {
		return false, fmt.Errorf("volume %s: %w", name, err)
	}
	src, err := vm.VolumeDataDir(img)
	if err != nil {
		return false, err
	}
	tmp := filepath.Join(v.Dir, ".shared-new")
	os.RemoveAll(tmp)
	os.RemoveAll(filepath.Join(v.Dir, sharedDir)) // of a conversion that died
	if err := extract(ctx, img, "/"+src, filepath.Join(tmp, vm.VolumeData)); err != nil {
		os.RemoveAll(tmp)
		return false, fmt.Errorf("volume %s: copying its data out of %s: %w", name, img, err)
	}
	if err := os.Rename(tmp, filepath.Join(v.Dir, sharedDir)); err != nil {
		return false, err
	}
	v.Kind = Shared
	b, err := json.MarshalIndent(v.Info, "", "  ")
	if err != nil {
		return false, err
	}
	if err := atomicfile.WriteFile(filepath.Join(v.Dir, infoFile), append(b, '\n'), 0o600); err != nil {
		return false, err
	}
	return true, os.Remove(img)
}

func cmpErr(err, otherwise error) error {
	if err != nil {
		return err
	}
	return otherwise
}

// entry is a line of debugfs's ls -p: /inode/mode/uid/gid/name/size/.
type entry struct {
	ino      int
	mode     uint32 // st_mode: type and permissions
	uid, gid int
	name     string
}

// parseLs reads the output of `ls -p` commands: the entries of each
// listed directory (. and .. left out), by the command that listed it.
func parseLs(out string) (map[string][]entry, error) {
	lists := map[string][]entry{}
	var cmd string
	for _, line := range strings.Split(out, "\n") {
		if c, ok := strings.CutPrefix(line, "debugfs: "); ok {
			cmd = c
			continue
		}
		if !strings.HasPrefix(line, "/") || cmd == "" {
			continue
		}
		f := strings.Split(line, "/")
		if len(f) != 8 {
			return nil, fmt.Errorf("debugfs: an entry it lists as %q", line)
		}
		ino, err1 := strconv.Atoi(f[1])
		mode, err2 := strconv.ParseUint(f[2], 8, 32)
		uid, err3 := strconv.Atoi(f[3])
		gid, err4 := strconv.Atoi(f[4])
		if err := errors.Join(err1, err2, err3, err4); err != nil {
			return nil, fmt.Errorf("debugfs: an entry it lists as %q: %w", line, err)
		}
		if f[5] == "." || f[5] == ".." {
			continue
		}
		lists[cmd] = append(lists[cmd], entry{ino: ino, mode: uint32(mode), uid: uid, gid: gid, name: f[5]})
	}
	return lists, nil
}

// extract copies the directory src of the ext4 image img (and what is in
// it) to dest, which must not exist. debugfs's rdump copies directories,
// regular files and symlinks, keeping owners, modes and times, but not
// the owners of symlinks, hard links (it copies each name), nor special
// files (it leaves them out): a listing of the tree fixes those after.
func extract(ctx context.Context, img, src, dest string) error {
	if strings.ContainsAny(dest, "\"\n") {
		return fmt.Errorf("the volume's path %q has a quote or a newline, which debugfs cannot be given", dest)
	}
	tree, err := listTree(ctx, img, src)
	if err != nil {
		return err
	}
	root := tree[""]
	if err := os.MkdirAll(dest, 0o755); err != nil {
		return err
	}
	// The top level is dumped by inode (rdump names each "<ino>") and
	// renamed, so that no name of the image is put in a command.
	var cmds []string
	seen := map[int]string{}
	for _, e := range root.children {
		if isRdumped(e.mode) && seen[e.ino] == "" {
			seen[e.ino] = e.name
			cmds = append(cmds, fmt.Sprintf(`rdump <%d> "%s"`, e.ino, dest))
		}
	}
	out, err := vm.Debugfs(ctx, img, cmds)
	if err != nil {
		return err
	}
	for ino, name := range seen {
		if err := os.Rename(filepath.Join(dest, fmt.Sprintf("<%d>", ino)), filepath.Join(dest, name)); err != nil {
			return fmt.Errorf("rdump left no %s: %w (debugfs: %s)", name, err, strings.TrimSpace(out))
		}
	}
	if err := fixUp(tree, dest); err != nil {
		return err
	}
	return applyOwner(dest, root.self)
}

// isRdumped says whether rdump copies files of mode.
func isRdumped(mode uint32) bool {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR, unix.S_IFREG, unix.S_IFLNK:
		return true
	}
	return false
}

// dirList is a directory of the image: its own entry (from its parent's
// listing, or from its "." for the top) and its children.
type dirList struct {
	self     entry
	children []entry
}

// listTree lists the directory src of img and every directory below it,
// one debugfs run per level, by relative path ("" is src).
func listTree(ctx context.Context, img, src string) (map[string]*dirList, error) {
	out, err := vm.Debugfs(ctx, img, []string{"ls -p " + src})
	if err != nil {
		return nil, err
	}
	self, err := topEntry(out, src)
	if err != nil {
		return nil, err
	}
	tree := map[string]*dirList{"": {self: self}}
	level := map[string]int{"": self.ino}
	for len(level) > 0 {
		var cmds []string
		for _, ino := range level {
			cmds = append(cmds, fmt.Sprintf("ls -p <%d>", ino))
		}
		out, err := vm.Debugfs(ctx, img, cmds)
		if err != nil {
			return nil, err
		}
		lists, err := parseLs(out)
		if err != nil {
			return nil, err
		}
		next := map[string]int{}
		for rel, ino := range level {
			for _, e := range lists[fmt.Sprintf("ls -p <%d>", ino)] {
				if rel == "" && src == "/" && e.name == "lost+found" {
					continue // ext4's, not the volume's
				}
				if strings.Contains(e.name, "/") || e.name == "" {
					return nil, fmt.Errorf("an entry named %q", e.name)
				}
				tree[rel].children = append(tree[rel].children, e)
				if e.mode&unix.S_IFMT == unix.S_IFDIR {
					p := filepath.Join(rel, e.name)
					tree[p], next[p] = &dirList{self: e}, e.ino
				}
			}
		}
		level = next
	}
	return tree, nil
}

// topEntry reads the inode, mode and owner of src from the output of
// `ls -p src` (its "." entry).
func topEntry(out, src string) (entry, error) {
	for _, line := range strings.Split(out, "\n") {
		f := strings.Split(line, "/")
		if len(f) == 8 && f[5] == "." {
			ino, _ := strconv.Atoi(f[1])
			mode, _ := strconv.ParseUint(f[2], 8, 32)
			uid, _ := strconv.Atoi(f[3])
			gid, _ := strconv.Atoi(f[4])
			return entry{ino: ino, mode: uint32(mode), uid: uid, gid: gid, name: "."}, nil
		}
	}
	return entry{}, fmt.Errorf("debugfs cannot list %s: %s", src, lastLine(out))
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// fixUp makes, in the copy at dest, what rdump leaves out or gets wrong:
// the owners of symlinks, hard links, FIFOs and sockets, the setgid and
// sticky bits of directories; the directories' times, which those
// changes move, are put back.
func fixUp(tree map[string]*dirList, dest string) error {
	first := map[int]string{}
	for rel, d := range tree {
		dir := filepath.Join(dest, rel)
		fi, err := os.Stat(dir)
		if err != nil {
			return err
		}
		changed := false
		for _, e := range d.children {
			path := filepath.Join(dir, e.name)
			typ := e.mode & unix.S_IFMT
			if typ != unix.S_IFDIR {
				if f, ok := first[e.ino]; ok {
					os.Remove(path)
					if err := os.Link(f, path); err != nil {
						return err
					}
					changed = true
					continue
				}
				first[e.ino] = path
			}
			switch typ {
			case unix.S_IFDIR:
				// rdump drops setgid and sticky.
				if err := applyOwner(path, e); err != nil {
					return err
				}
			case unix.S_IFLNK:
				if err := os.Lchown(path, e.uid, e.gid); err != nil {
					return err
				}
			case unix.S_IFIFO, unix.S_IFSOCK:
				if err := unix.Mknod(path, e.mode, 0); err != nil {
					return fmt.Errorf("making %s: %w", path, err)
				}
				if err := applyOwner(path, e); err != nil {
					return err
				}
				changed = true
			case unix.S_IFCHR, unix.S_IFBLK:
				return fmt.Errorf("%s is a device node, which a shared volume does not take", filepath.Join(rel, e.name))
			}
		}
		if changed {
			if err := os.Chtimes(dir, fi.ModTime(), fi.ModTime()); err != nil {
				return err
			}
		}
	}
	return nil
}

// applyOwner gives path the owner and permissions of e.
func applyOwner(path string, e entry) error {
	if err := os.Lchown(path, e.uid, e.gid); err != nil {
		return err
	}
	return os.Chmod(path, fs.FileMode(e.mode&0o777)|modeBits(e.mode))
}

// modeBits maps setuid, setgid and sticky from st_mode to fs.FileMode.
func modeBits(m uint32) fs.FileMode {
	var fm fs.FileMode
	if m&unix.S_ISUID != 0 {
		fm |= fs.ModeSetuid
	}
	if m&unix.S_ISGID != 0 {
		fm |= fs.ModeSetgid
	}
	if m&unix.S_ISVTX != 0 {
		fm |= fs.ModeSticky
	}
	return fm
}
