//go:build linux

// Command testinit is the guest init of the VM conformance suite: a static
// binary that boots as /init from an initramfs and acts as the kernel
// command line says, printing "vmtest: ..." lines on the console that the
// suite reads back.
//
//	vmtest.mode=exit     power off at once
//	vmtest.mode=wait     wait for the ACPI power button or a "shutdown"
//	                     line on the vmcompose.agent port, then power off
//	vmtest.ignore=acpi   in wait mode, print the power button press but
//	                     keep running (so the host must escalate)
//
// With vmtest.scratch=1, the disk with serial "scratch" is mounted first and
// the count of boots in its file "boots" is incremented and printed
// ("vmtest: boots=N"), which is how the suite checks that the writable
// layer survives stop and start.
//
// The modules of the initramfs's on-demand manifest are loaded for the
// devices there are, as vminit does. With vmtest.shares=TAG,TAG..., each
// virtiofs share is mounted at /mnt/TAG, where testinit
// reads in.txt, appends to it, creates out.txt, and for a share that
// refuses writes remounts it read-write and tries again, printing
// "vmtest: share TAG: what=result" lines.
package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/vm/initramfs/modload"
)

const manifest = "/etc/vmcompose/modules"

func say(format string, args ...any) {
	fmt.Fprintf(os.Stdout, "vmtest: "+format+"\n", args...)
}

func main() {
	for _, m := range [][3]string{{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"}} {
		os.MkdirAll(m[1], 0o755)
		unix.Mount(m[0], m[1], m[2], 0, "")
	}
	if f, err := os.OpenFile("/dev/console", os.O_WRONLY, 0); err == nil {
		unix.Dup3(int(f.Fd()), 1, 0)
		unix.Dup3(int(f.Fd()), 2, 0)
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	args := map[string]string{}
	for _, f := range strings.Fields(string(cmdline)) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(k, "vmtest.") {
			args[strings.TrimPrefix(k, "vmtest.")] = v
		}
	}
	loadModules()
	if _, err := modload.LoadForDevices(modload.OnDemandPath, modload.Modaliases("virtio")); err != nil {
		say("%v", err)
	}
	up, _ := os.ReadFile("/proc/uptime")
	say("boot uptime=%s", strings.Fields(string(up))[0])
	if args["scratch"] == "1" {
		scratch()
	}
	if args["shares"] != "" {
		for _, tag := range strings.Split(args["shares"], ",") {
			share(tag)
		}
	}
	switch args["mode"] {
	case "exit":
		poweroff("exit")
	default:
		reason := make(chan string, 2)
		powerButton(reason, args["ignore"] == "acpi")
		go agent(reason)
		say("waiting")
		poweroff(<-reason)
	}
}

func loadModules() {
	b, err := os.ReadFile(manifest)
	if err != nil {
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		p := strings.Fields(line)[0]
		if !filepath.IsAbs(p) {
			p = filepath.Join(filepath.Dir(manifest), p)
		}
		f, err := os.Open(p)
		if err != nil {
			say("module %s: %v", p, err)
			continue
		}
		if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
			say("module %s: %v", p, err)
		}
		f.Close()
	}
}

// findDisk waits a little for the virtio disk with serial.
func findDisk(serial string) string {
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		ents, _ := os.ReadDir("/sys/block")
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join("/sys/block", e.Name(), "serial"))
			if err == nil && strings.TrimSpace(string(b)) == serial {
				return "/dev/" + e.Name()
			}
		}
	}
	return ""
}

func scratch() {
	dev := findDisk("scratch")
	if dev == "" {
		say("no scratch disk")
		return
	}
	os.MkdirAll("/mnt", 0o755)
	if err := unix.Mount(dev, "/mnt", "ext4", 0, ""); err != nil {
		say("mounting scratch %s: %v", dev, err)
		return
	}
	defer unix.Unmount("/mnt", 0)
	b, _ := os.ReadFile("/mnt/boots")
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	n++
	f, err := os.Create("/mnt/boots")
	if err == nil {
		fmt.Fprintln(f, n)
		f.Sync()
		f.Close()
	}
	unix.Sync()
	say("boots=%d", n)
}

// share mounts the virtiofs share tag at /mnt/tag and reports what the
// guest may do there.
func share(tag string) {
	dir := "/mnt/" + tag
	os.MkdirAll(dir, 0o755)
	if err := unix.Mount(tag, dir, "virtiofs", 0, ""); err != nil {
		say("share %s: mount=%s", tag, errName(err))
		return
	}
	var st unix.Stat_t
	if err := unix.Stat(dir+"/in.txt", &st); err == nil {
		say("share %s: stat=%o %d:%d", tag, st.Mode&0o7777, st.Uid, st.Gid)
	}
	b, err := os.ReadFile(dir + "/in.txt")
	if err != nil {
		say("share %s: read=%s", tag, errName(err))
	} else {
		say("share %s: read=%s", tag, strings.TrimSpace(string(b)))
	}
	write := func() (string, string) {
		f, err := os.OpenFile(dir+"/in.txt", os.O_WRONLY|os.O_APPEND, 0)
		if err == nil {
			_, err = fmt.Fprintln(f, "appended by guest")
			f.Close()
		}
		return errName(err), errName(os.WriteFile(dir+"/out.txt", []byte("from guest\n"), 0o644))
	}
	appended, created := write()
	say("share %s: append=%s", tag, appended)
	say("share %s: create=%s", tag, created)
	if appended != "ok" || created != "ok" {
		// The guest is root in its VM: a read-only share must hold
		// when it asks for read-write.
		if err := unix.Mount("", dir, "", unix.MS_REMOUNT, ""); err != nil {
			say("share %s: remount=%s", tag, errName(err))
		}
		appended, created = write()
		say("share %s: remounted append=%s create=%s", tag, appended, created)
	}
	unix.Sync()
}

// errName is "ok" for nil, else the errno's name (EROFS) or the error.
func errName(err error) string {
	if err == nil {
		return "ok"
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		return unix.ErrnoName(errno)
	}
	return err.Error()
}

// agent reads lines from the vmcompose.agent port; "shutdown" ends the VM.
func agent(reason chan<- string) {
	var dev string
	for deadline := time.Now().Add(5 * time.Second); dev == "" && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		names, _ := filepath.Glob("/sys/class/virtio-ports/*/name")
		for _, n := range names {
			if b, _ := os.ReadFile(n); strings.TrimSpace(string(b)) == "vmcompose.agent" {
				dev = "/dev/" + filepath.Base(filepath.Dir(n))
			}
		}
	}
	if dev == "" {
		say("no agent port")
		return
	}
	for {
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			say("agent port: %v", err)
			return
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "shutdown" {
				fmt.Fprintln(f, "ok")
				reason <- "agent"
				return
			}
		}
		f.Close()
		time.Sleep(20 * time.Millisecond)
	}
}

// powerButton waits for KEY_POWER on the input devices there are now (the
// ACPI button driver turns the power-button event into one). It opens them
// before returning, so that a press after "waiting" is seen.
func powerButton(reason chan<- string, ignore bool) {
	evs, _ := filepath.Glob("/dev/input/event*")
	if len(evs) == 0 {
		say("no input devices")
	}
	for _, ev := range evs {
		f, err := os.Open(ev)
		if err != nil {
			say("input %s: %v", ev, err)
			continue
		}
		go func() {
			defer f.Close()
			var e [24]byte // struct input_event on 64-bit
			for {
				if _, err := f.Read(e[:]); err != nil {
					return
				}
				typ := binary.LittleEndian.Uint16(e[16:])
				code := binary.LittleEndian.Uint16(e[18:])
				val := int32(binary.LittleEndian.Uint32(e[20:]))
				if typ == 1 && code == 116 && val == 1 {
					if ignore {
						say("power button ignored")
						continue
					}
					reason <- "acpi"
					return
				}
			}
		}()
	}
}

func poweroff(why string) {
	unix.Sync()
	say("poweroff reason=%s", why)
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}
