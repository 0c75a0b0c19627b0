package initramfs

import (
	"fmt"
	"io"
)

// newcWriter writes a cpio archive in the "new ASCII" (newc) format, the
// one the kernel unpacks: a 110-byte header of hex fields, the name with
// its NUL, padding to 4 bytes, the data, padding to 4 bytes. Every entry is
// owned by root with a zero mtime, so the archive depends on content only.
type newcWriter struct {
	w     io.Writer
	ino   int
	err   error
	total int64
}

// newc file types, as in stat's st_mode.
const (
	modeDir  = 0o040000
	modeReg  = 0o100000
	modeChar = 0o020000
)

func (c *newcWriter) header(name string, mode uint32, size int64, nlink, rmaj, rmin uint32) {
	if c.err != nil {
		return
	}
	c.ino++
	h := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, rmaj, rmin, len(name)+1, 0)
	c.write([]byte(h))
	c.write([]byte(name + "\x00"))
	c.pad()
}

func (c *newcWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	var n int
	n, c.err = c.w.Write(b)
	c.total += int64(n)
}

func (c *newcWriter) pad() {
	if r := c.total % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// Dir adds a directory.
func (c *newcWriter) Dir(name string, perm uint32) { c.header(name, modeDir|perm, 0, 2, 0, 0) }

// CharDev adds a character device node.
func (c *newcWriter) CharDev(name string, perm, major, minor uint32) {
	c.header(name, modeChar|perm, 0, 1, major, minor)
}

// File adds a regular file of size bytes read from r.
func (c *newcWriter) File(name string, perm uint32, size int64, r io.Reader) {
	c.header(name, modeReg|perm, size, 1, 0, 0)
	if c.err != nil {
		return
	}
	n, err := io.Copy(c.w, io.LimitReader(r, size))
	c.total += n
	if err == nil && n != size {
		err = fmt.Errorf("%s: %d bytes, want %d", name, n, size)
	}
	c.err = err
	c.pad()
}

// Close writes the trailer and returns the first error.
func (c *newcWriter) Close() error {
	c.header("TRAILER!!!", 0, 0, 1, 0, 0)
	return c.err
}
