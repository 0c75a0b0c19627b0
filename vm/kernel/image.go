package kernel

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
)

type imageKind int

const (
	kindELF imageKind = iota + 1
	kindBzImage
)

// x86 boot protocol offsets (Documentation/arch/x86/boot.rst).
const (
	bootSetupSects    = 0x1f1
	bootHeaderMagic   = 0x202 // "HdrS"
	bootVersion       = 0x206
	bootKernelVersion = 0x20e
	bootPayloadOffset = 0x248
	bootPayloadLength = 0x24c
)

// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit PVH entry
// point that lets QEMU, Firecracker and Cloud Hypervisor boot an ELF vmlinux
// directly.
const xenElfnotePhys32Entry = 18

// identify tells an ELF image from a bzImage and, for a bzImage, returns the
// kernel release it records.
func identify(path string) (imageKind, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", fmt.Errorf("kernel image: %w", err)
	}
	defer f.Close()
	head := make([]byte, 0x400)
	n, _ := io.ReadFull(f, head)
	head = head[:n]
	if bytes.HasPrefix(head, []byte(elf.ELFMAG)) {
		return kindELF, "", nil
	}
	if len(head) > bootPayloadLength+4 && string(head[bootHeaderMagic:bootHeaderMagic+4]) == "HdrS" {
		return kindBzImage, bzImageVersion(f, head), nil
	}
	return 0, "", fmt.Errorf("kernel image %s: neither an ELF vmlinux nor a bzImage", path)
}

func bzImageVersion(f *os.File, head []byte) string {
	ptr := int64(binary.LittleEndian.Uint16(head[bootKernelVersion:]))
	if ptr == 0 {
		return ""
	}
	buf := make([]byte, 256)
	n, _ := f.ReadAt(buf, ptr+0x200)
	s, _, _ := strings.Cut(string(buf[:n]), "\x00")
	if fields := strings.Fields(s); len(fields) > 0 {
		return fields[0]
	}
	return ""
}

// ExtractVmlinux decompresses the ELF vmlinux inside the bzImage at src and
// writes it to dst. The payload may be compressed with LZ4 (Debian's cloud
// kernel), gzip or zstd; XZ, LZMA, bzip2 and LZO are not supported. The
// result is checked to be an ELF with a PVH entry note, so that it can be
// booted without the bzImage's decompressor.
func ExtractVmlinux(src, dst string) error {
	if err := extractVmlinux(src, dst); err != nil {
		return fmt.Errorf("extracting vmlinux from %s: %w", src, err)
	}
	return nil
}

func extractVmlinux(src, dst string) error {
	f, err := os.Open(src)
	if err != nil {
		return err
	}
	defer f.Close()
	head := make([]byte, bootPayloadLength+4)
	if _, err := io.ReadFull(f, head); err != nil {
		return fmt.Errorf("reading boot header: %w", err)
	}
	if string(head[bootHeaderMagic:bootHeaderMagic+4]) != "HdrS" || binary.LittleEndian.Uint16(head[bootVersion:]) < 0x208 {
		return errors.New("not a bzImage with boot protocol 2.08 or later")
	}
	setupSects := int64(head[bootSetupSects])
	if setupSects == 0 {
		setupSects = 4
	}
	off := (setupSects+1)*512 + int64(binary.LittleEndian.Uint32(head[bootPayloadOffset:]))
	length := int64(binary.LittleEndian.Uint32(head[bootPayloadLength:]))
	if length < 8 {
		return fmt.Errorf("payload of %d bytes", length)
	}
	// The payload ends with the uncompressed size, little-endian.
	var tail [4]byte
	if _, err := f.ReadAt(tail[:], off+length-4); err != nil {
		return fmt.Errorf("reading payload size: %w", err)
	}
	size := int64(binary.LittleEndian.Uint32(tail[:]))
	payload := io.NewSectionReader(f, off, length-4)
	var magic [6]byte
	if _, err := payload.ReadAt(magic[:], 0); err != nil {
		return fmt.Errorf("reading payload: %w", err)
	}
	var r io.Reader
	switch {
	case bytes.HasPrefix(magic[:], []byte{0x02, 0x21, 0x4c, 0x18}):
		r = lz4.NewReader(payload)
	case bytes.HasPrefix(magic[:], []byte{0x1f, 0x8b}):
		zr, err := gzip.NewReader(payload)
		if err != nil {
			return err
		}
		r = zr
	case bytes.HasPrefix(magic[:], []byte{0x28, 0xb5, 0x2f, 0xfd}):
		zr, err := zstd.NewReader(payload, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<31))
		if err != nil {
			return err
		}
		defer zr.Close()
		r = zr
	default:
		return fmt.Errorf("payload compression with magic % x: only LZ4, gzip and zstd are supported", magic)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	w := bufio.NewWriterSize(out, 1<<20)
	n, err := io.Copy(w, r)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("decompressing payload: %w", err)
	}
	if n != size {
		return fmt.Errorf("payload decompressed to %d bytes, the image says %d", n, size)
	}
	return CheckPVH(dst)
}

// CheckPVH returns nil when path is an ELF executable with a Xen PVH entry
// note (XEN_ELFNOTE_PHYS32_ENTRY).
func CheckPVH(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("vmlinux %s: %w", path, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b, err := io.ReadAll(p.Open())
		if err != nil {
			return fmt.Errorf("vmlinux %s notes: %w", path, err)
		}
		if hasNote(b, f.ByteOrder, "Xen", xenElfnotePhys32Entry) {
			return nil
		}
	}
	return fmt.Errorf("vmlinux %s: no PVH entry note (Xen note type %d); the kernel needs CONFIG_PVH=y", path, xenElfnotePhys32Entry)
}

// hasNote walks ELF notes: namesz, descsz, type, then name and desc, each
// padded to 4 bytes.
func hasNote(b []byte, bo binary.ByteOrder, name string, typ uint32) bool {
	align := func(n uint32) uint32 { return (n + 3) &^ 3 }
	for len(b) >= 12 {
		namesz, descsz, t := bo.Uint32(b), bo.Uint32(b[4:]), bo.Uint32(b[8:])
		b = b[12:]
		if uint64(align(namesz))+uint64(align(descsz)) > uint64(len(b)) {
			return false
		}
		n := strings.TrimRight(string(b[:namesz]), "\x00")
		if n == name && t == typ {
			return true
		}
		b = b[align(namesz)+align(descsz):]
	}
	return false
}
