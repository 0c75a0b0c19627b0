package kernel

import (
	"fmt"
	"strings"
)

// needed are the build options a guest kernel must have for vmcompose, each
// built in ("y") or, where allowed, as a module ("m"). A symbol that lists
// alternatives with "|" needs one of them.
var needed = []struct {
	Symbol string
	Module bool   // a module will do
	Why    string // said in the error
}{
	{"CONFIG_BLK_DEV_INITRD", false, "the initramfs"},
	{"CONFIG_DEVTMPFS", false, "/dev without udev"},
	{"CONFIG_VIRTIO_MMIO|CONFIG_VIRTIO_PCI", true, "virtio devices"},
	{"CONFIG_VIRTIO_BLK", true, "root and volume disks"},
	{"CONFIG_VIRTIO_CONSOLE", true, "the control channel"},
	{"CONFIG_VIRTIO_NET", true, "the network"},
	{"CONFIG_EXT4_FS", true, "root and volume filesystems"},
	{"CONFIG_OVERLAY_FS", true, "the writable root"},
}

// Check returns an error naming every build option the guest needs that the kernel's
// config lacks, and whether a PVH entry is missing for an ELF image. A
// kernel without a known config passes: there is nothing to check.
func (k *Kernel) Check() error {
	cfg, err := k.Config()
	if err != nil {
		return err
	}
	if len(cfg) == 0 {
		return nil
	}
	var missing []string
	for _, n := range needed {
		ok := false
		for _, sym := range strings.Split(n.Symbol, "|") {
			if v := cfg[sym]; v == "y" || (v == "m" && n.Module && k.ModulesDir != "") {
				ok = true
			}
		}
		if !ok {
			want := "=y"
			if n.Module {
				want = "=y or =m"
			}
			missing = append(missing, fmt.Sprintf("%s%s (%s)", strings.ReplaceAll(n.Symbol, "|", " or "), want, n.Why))
		}
	}
	if k.BzImage != k.Image && cfg["CONFIG_PVH"] != "y" {
		missing = append(missing, "CONFIG_PVH=y (booting the vmlinux directly)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("kernel %s (%s) lacks %s", k.Version, k.ConfigFile, strings.Join(missing, ", "))
	}
	return nil
}
