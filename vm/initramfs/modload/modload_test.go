package modload_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/vmcompose/vmcompose/vm/initramfs/modload"
)

func TestParse(t *testing.T) {
	got, err := modload.Parse(strings.NewReader("# comment\n/lib/modules/6.1/kernel/a.ko\n\n  /lib/modules/6.1/kernel/virtio-rng.ko  \n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"/lib/modules/6.1/kernel/a.ko", "/lib/modules/6.1/kernel/virtio-rng.ko"}
	if !slices.Equal(got, want) {
		t.Errorf("Parse: %q, want %q", got, want)
	}
	if n := modload.Name(got[1]); n != "virtio_rng" {
		t.Errorf("Name: %s", n)
	}
	if _, err := modload.Parse(strings.NewReader("kernel/a.ko\n")); err == nil || !strings.Contains(err.Error(), "not an absolute path") {
		t.Errorf("Parse of a relative path: %v", err)
	}
	if mods, err := modload.Read("/nonexistent/manifest"); err != nil || mods != nil {
		t.Errorf("Read of a missing manifest: %v, %v", mods, err)
	}
}

func TestOnDemand(t *testing.T) {
	rules, err := modload.ParseOnDemand(strings.NewReader(
		"# pattern, then modules, dependencies first\n" +
			"virtio:d00000001v* /m/failover.ko /m/net_failover.ko /m/virtio_net.ko\n" +
			"virtio:d0000001Av* /m/fuse.ko /m/virtiofs.ko\n" +
			"virtio:d0000001Av0000ABCD /m/virtiofs.ko\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		devices []string
		want    []string
	}{
		{nil, nil},
		{[]string{"virtio:d00000002v00001AF4", "virtio:d00000003v00001AF4"}, nil}, // disks and the console
		{[]string{"virtio:d00000001v00001AF4"}, []string{"/m/failover.ko", "/m/net_failover.ko", "/m/virtio_net.ko"}},
		{[]string{"virtio:d00000001v00001AF4", "virtio:d00000001v00001AF4"}, []string{"/m/failover.ko", "/m/net_failover.ko", "/m/virtio_net.ko"}},
		{[]string{"virtio:d0000001Av0000ABCD"}, []string{"/m/fuse.ko", "/m/virtiofs.ko"}},
		{[]string{"virtio:d0000001av00001AF4"}, nil}, // patterns are case-sensitive, as in the kernel
	} {
		if got := modload.Match(rules, c.devices); !slices.Equal(got, c.want) {
			t.Errorf("Match(%q) = %q, want %q", c.devices, got, c.want)
		}
	}
	for _, bad := range []string{"virtio:d1\n", "virtio:[ /m/a.ko\n", "virtio:d1 m/a.ko\n"} {
		if _, err := modload.ParseOnDemand(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseOnDemand(%q) took it", bad)
		}
	}
}
