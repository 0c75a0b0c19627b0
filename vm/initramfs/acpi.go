package initramfs

import (
	"bytes"
	"fmt"
	"path"
	"slices"
	"strings"
)

// ACPITables returns an uncompressed cpio archive that puts ACPI tables
// where the kernel looks for them as it boots (kernel/firmware/acpi/*.aml,
// CONFIG_ACPI_TABLE_UPGRADE), to be put in front of an initramfs: the
// kernel reads them in addition to the tables the VMM gives it. tables
// maps file names ("vmcompose.aml") to the tables' bytes.
func ACPITables(tables map[string][]byte) ([]byte, error) {
	var buf bytes.Buffer
	cw := &newcWriter{w: &buf}
	const dir = "kernel/firmware/acpi"
	cw.Dir("kernel", 0o755)
	cw.Dir("kernel/firmware", 0o755)
	cw.Dir(dir, 0o755)
	names := make([]string, 0, len(tables))
	for n := range tables {
		if n == "" || strings.Contains(n, "/") || !strings.HasSuffix(n, ".aml") {
			return nil, fmt.Errorf("ACPI table file name %q: want NAME.aml", n)
		}
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		cw.File(path.Join(dir, n), 0o644, int64(len(tables[n])), bytes.NewReader(tables[n]))
	}
	if err := cw.Close(); err != nil {
		return nil, err
	}
	// Pad to 512 bytes as cpio(1) does; the kernel skips zeros between
	// concatenated archives.
	if r := buf.Len() % 512; r != 0 {
		buf.Write(make([]byte, 512-r))
	}
	return buf.Bytes(), nil
}
