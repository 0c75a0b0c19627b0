//go:build linux

package qemu

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vmcompose/vmcompose/vm"
)

// Defaults for a spec that leaves sizes at zero.
const (
	defaultVCPUs  = 1
	defaultMemory = 256 << 20
)

// File names in a VM directory.
const (
	specFile    = "spec.json"
	runFile     = "run.json"
	exitFile    = "exit.json"
	lockFile    = "lock"
	scratchFile = "scratch.img"
	pidFile     = "qemu.pid"
	qemuLog     = "qemu.log"
	consoleLog  = "console.log"
	qmpSock     = "qmp.sock"
	agentSock   = "agent.sock"
	// restoringFile is there from before a qemu restoring from a
	// template is spawned until its state is loaded and it runs.
	restoringFile = "restoring"
)

// baseCmdline are the kernel arguments every guest gets before the spec's
// own. microvm has no PCI; the blacklisted initcalls and the crypto self
// tests cost ~0.3 s under TCG; panic=-1 with -no-reboot turns a guest panic
// into the end of the qemu process. quiet keeps only warnings and errors on
// the serial console, where every byte is an emulated port write (~40 ms
// per boot under TCG); a spec's "loglevel=7" brings the rest back.
var baseCmdline = []string{
	"console=ttyS0", "quiet", "panic=-1", "pci=off", "cryptomgr.notests",
	"initcall_blacklist=init_kprobe_trace,crypto_kdf108_init",
}

// tscKHz returns the host's TSC frequency in kHz, or 0 when unknown. Under
// TCG the guest's TSC runs at the host's, and microvm guests hang in ~1 of 4
// boots calibrating it unless the kernel is told (tsc_early_khz). Inside a
// VM, /proc/cpuinfo's "cpu MHz" is the TSC frequency the host kernel
// calibrated; on bare metal it is the current, scaled core frequency, so
// there the TSC is timed instead (50 ms, once per process).
func tscKHz() int {
	tscOnce.Do(func() {
		mhz, hypervisor := cpuinfoMHz()
		if hypervisor && mhz > 0 {
			tscVal = int(mhz * 1000)
			return
		}
		tscVal = measureTSCkHz(50 * time.Millisecond)
	})
	return tscVal
}

var (
	tscOnce sync.Once
	tscVal  int
)

// cpuinfoMHz returns the first "cpu MHz" of /proc/cpuinfo and whether the
// "hypervisor" flag is set (this host is itself a VM).
func cpuinfoMHz() (mhz float64, hypervisor bool) {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return 0, false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "cpu MHz":
			if mhz == 0 {
				mhz, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
			}
		case "flags":
			hypervisor = slices.Contains(strings.Fields(v), "hypervisor")
			return mhz, hypervisor
		}
	}
	return mhz, hypervisor
}

// escape doubles the commas of a value inside a QEMU option list.
func escape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// macFor derives a stable, locally administered MAC from the VM name and
// the NIC index, in QEMU's 52:54:00 prefix.
func macFor(name string, i int) string {
	h := sha256.Sum256(fmt.Appendf(nil, "%s/%d", name, i))
	return fmt.Sprintf("52:54:00:%02x:%02x:%02x", h[0], h[1], h[2])
}

// sandboxArg turns on QEMU's seccomp filter: no obsolete system calls, no
// privilege changes, no resource-control calls. Spawning stays allowed
// (migration to a file uses exec:).
const sandboxArg = "on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny"

// memoryFile is a template's memory (see template_linux.go): the template
// writes it (shared) and saves its state without it (x-ignore-shared); its
// copies map it privately, so that the pages they only read are one copy
// in the page cache for all of them, and what they write is their own.
//
// Nothing may discard a copy's memory (no balloon, no virtio-mem): QEMU
// 7.2 punches the hole in the file even for a private mapping, which
// would change the template under every other copy. A template's file is
// never written once saved; a new one replaces it by rename.
type memoryFile struct {
	path   string
	shared bool
}

// buildArgs returns qemu's arguments for spec, its memory in memFile when
// that is not nil. Relative paths are relative to the VM directory, which
// is qemu's working directory.
func buildArgs(spec vm.Spec, accel string, tsc int, tbSizeMiB int, sandbox bool, memFile *memoryFile) []string {
	vcpus := spec.VCPUs
	if vcpus == 0 {
		vcpus = defaultVCPUs
	}
	mem := spec.Memory
	if mem == 0 {
		mem = defaultMemory
	}
	console := consoleLog
	if spec.ConsoleLog != "" {
		console = spec.ConsoleLog
	}
	size := strconv.FormatInt(mem>>20, 10) + "M"
	var backend string
	switch {
	case len(spec.Shares) > 0:
		// A vhost-user device's daemon reads and writes the guest's
		// memory: only VMs with shares get it as a shared memfd, the
		// others keep QEMU's private anonymous memory.
		backend = "memory-backend-memfd,id=mem,size=" + size + ",share=on"
	case memFile != nil:
		share := "off"
		if memFile.shared {
			share = "on"
		}
		backend = "memory-backend-file,id=mem,size=" + size + ",mem-path=" + escape(memFile.path) + ",share=" + share
	}
	machine := "microvm,acpi=on"
	if backend != "" {
		machine += ",memory-backend=mem"
	}
	a := []string{
		"-name", "vmcompose:" + spec.Name,
		"-M", machine,
	}
	switch accel {
	case AccelKVM:
		a = append(a, "-accel", "kvm", "-cpu", "host")
	default:
		tcg := "tcg"
		if spec.TranslationCache > 0 {
			tbSizeMiB = int(max(1, spec.TranslationCache>>20))
		}
		if tbSizeMiB > 0 {
			tcg += ",tb-size=" + strconv.Itoa(tbSizeMiB)
		}
		a = append(a, "-accel", tcg)
	}
	a = append(a,
		"-smp", strconv.Itoa(vcpus),
		"-m", size,
	)
	if backend != "" {
		a = append(a, "-object", backend)
	}
	a = append(a,
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-global", "virtio-mmio.force-legacy=false",
	)
	if sandbox {
		a = append(a, "-sandbox", sandboxArg)
	}
	a = append(a,
		"-pidfile", pidFile,
		"-qmp", "unix:"+qmpSock+",server=on,wait=off",
		"-chardev", "file,id=console,append=on,path="+escape(console),
		"-serial", "chardev:console",
		// One port for the agent (port 0 is kept for a console): the
		// default of 31 ports costs the guest 64 virtqueues to set up,
		// about 20 ms of each boot under TCG.
		"-device", fmt.Sprintf("virtio-serial-device,max_ports=2,bus=virtio-mmio-bus.%d", agentTransport),
		"-chardev", "socket,id=agent,server=on,wait=off,path="+agentSock,
		"-device", "virtserialport,chardev=agent,name=vmcompose.agent",
	)
	disks := spec.Disks
	if spec.ScratchSize > 0 {
		disks = append([]vm.Disk{{Path: scratchFile, Serial: vm.ScratchSerial}}, disks...)
	}
	// Each device on its own transport, from the top down, so that a VM
	// restored from a template finds its control channel where the
	// template had it.
	transport := agentTransport
	bus := func() string {
		transport--
		return ",bus=virtio-mmio-bus." + strconv.Itoa(transport)
	}
	for i, d := range disks {
		id := fmt.Sprintf("disk%d", i)
		drive := "if=none,id=" + id + ",format=raw,file=" + escape(d.Path)
		if d.ReadOnly {
			drive += ",readonly=on"
		} else {
			drive += ",discard=unmap"
		}
		a = append(a, "-drive", drive,
			"-device", "virtio-blk-device,drive="+id+",serial="+d.Serial+bus())
	}
	for i, n := range spec.Networks {
		id := fmt.Sprintf("net%d", i)
		mac := n.MAC
		if mac == "" {
			mac = macFor(spec.Name, i)
		}
		a = append(a,
			"-netdev", "stream,id="+id+",server=off,addr.type=unix,addr.path="+escape(n.Socket),
			"-device", "virtio-net-device,netdev="+id+",mac="+mac+bus())
	}
	for i, sh := range spec.Shares {
		id := fmt.Sprintf("fs%d", i)
		a = append(a,
			"-chardev", "socket,id="+id+",path="+shareSock(i),
			"-device", "vhost-user-fs-device,chardev="+id+",tag="+sh.Tag+bus())
	}
	cmdline := append([]string(nil), baseCmdline...)
	if tsc > 0 && accel != AccelKVM { // KVM guests calibrate fine
		cmdline = append(cmdline, "tsc_early_khz="+strconv.Itoa(tsc), "tsc=reliable")
	}
	cmdline = append(cmdline, spec.Cmdline...)
	a = append(a, "-kernel", spec.Kernel)
	if spec.Initramfs != "" {
		a = append(a, "-initrd", spec.Initramfs)
	}
	a = append(a, "-append", strings.Join(cmdline, " "))
	return a
}

// lastLine is the last non-empty line of b, for error messages.
func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// lockFailure finds in qemu's log that it could not lock a disk image
// another process has open (`Failed to get "write" lock` / `Is another
// process using the image [PATH]?`), and returns the image's path.
func lockFailure(log []byte) (string, bool) {
	s := string(log)
	if !strings.Contains(s, "Failed to get ") || !strings.Contains(s, " lock") {
		return "", false
	}
	_, rest, ok := strings.Cut(s, "Is another process using the image [")
	if !ok {
		return "", false
	}
	path, _, ok := strings.Cut(rest, "]?")
	return path, ok
}
