//go:build linux

package qemu_test

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/vm/qemu"
)

// TestTemplate boots two VMs of one machine: the first builds the template
// and both are restored from it with their own disks. The copies must not
// share their random numbers or boot id, must have the host's time, and
// stop through the ACPI power button like any VM. A template that does not
// restore is dropped and the VM boots cold.
func TestTemplate(t *testing.T) {
	f := realGuest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	templates := t.TempDir()
	d, err := qemu.New(t.TempDir(), qemu.WithLogger(logger(t)), qemu.WithTemplates(templates))
	if err != nil {
		t.Fatal(err)
	}
	report := "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; cat /proc/sys/kernel/random/boot_id; date +%s; cat /proc/cmdline; for f in /sys/block/*/serial; do cat $f; echo; done | sort | tr '\\n' ' '; echo; exec sleep 1000"
	outputs := map[string][]string{}
	for _, name := range []string{"a", "b", "c"} {
		if name == "c" {
			// Break the template: c must boot cold, and the broken
			// template goes.
			snaps, _ := filepath.Glob(filepath.Join(templates, "*.snap"))
			if len(snaps) != 1 {
				t.Fatalf("templates: %v, want one", snaps)
			}
			fi, err := os.Stat(snaps[0])
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(snaps[0], fi.Size()/2); err != nil {
				t.Fatal(err)
			}
		}
		t0 := time.Now()
		c, st := bootGuest(ctx, t, d, f.serviceSpec(name))
		if err := c.Start(ctx, agent.Spec{Command: []string{"sh", "-c", report}}); err != nil {
			t.Fatalf("VM %s: %v (console: %s)", name, err, console(st.Console))
		}
		r, _, err := c.Attach(ctx, agent.Stdout, 0)
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		br := bufio.NewReader(r)
		for len(lines) < 5 {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("VM %s printed %q: %v", name, lines, err)
			}
			lines = append(lines, strings.TrimSpace(l))
		}
		r.Close()
		c.Close()
		t.Logf("VM %s: service reported %v after Start", name, time.Since(t0))
		outputs[name] = lines
		if sec, _ := strconv.ParseInt(lines[2], 10, 64); time.Since(time.Unix(sec, 0)).Abs() > 10*time.Second {
			t.Errorf("VM %s: guest time %s, host %s", name, time.Unix(sec, 0), time.Now())
		}
		if lines[4] != "rootfs scratch" {
			t.Errorf("VM %s: disks %q, want rootfs and scratch", name, lines[4])
		}
		restored := strings.Contains(lines[3], "vminit.template")
		if restored != (name != "c") {
			t.Errorf("VM %s: restored from the template: %v (command line %q)", name, restored, lines[3])
		}
		// Nobody asks the agent: Stop presses the ACPI power button.
		t1 := time.Now()
		if err := d.Stop(ctx, name, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		t.Logf("VM %s: Stop took %v", name, time.Since(t1))
		if b, _ := os.ReadFile(st.Console); !strings.Contains(string(b), `msg="power off"`) {
			t.Errorf("VM %s did not power off cleanly: %s", name, console(st.Console))
		}
	}
	for i, what := range []string{"random bytes", "boot id"} {
		if outputs["a"][i] == outputs["b"][i] {
			t.Errorf("VMs restored from one template share their %s: %s", what, outputs["a"][i])
		}
	}
	if snaps, _ := filepath.Glob(filepath.Join(templates, "*.snap")); len(snaps) != 0 {
		t.Errorf("the broken template is still there: %v", snaps)
	}
}

func console(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// TestStaleTemplatesAreRemoved: a template whose initramfs was replaced can
// never be used again, and goes when the next template is built.
func TestStaleTemplatesAreRemoved(t *testing.T) {
	f := realGuest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	templates := t.TempDir()
	d, err := qemu.New(t.TempDir(), qemu.WithLogger(logger(t)), qemu.WithTemplates(templates))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(f.initrd)
	if err != nil {
		t.Fatal(err)
	}
	initrd := filepath.Join(t.TempDir(), "initrd.cpio")
	if err := os.WriteFile(initrd, b, 0o644); err != nil {
		t.Fatal(err)
	}
	snaps := func() []string {
		s, _ := filepath.Glob(filepath.Join(templates, "*.snap"))
		return s
	}
	var first []string
	for i, name := range []string{"a", "b"} {
		if i == 1 {
			// The initramfs is rebuilt in place.
			later := time.Now().Add(time.Minute)
			if err := os.Chtimes(initrd, later, later); err != nil {
				t.Fatal(err)
			}
		}
		if i == 1 {
			plantBuilds(t, templates)
		}
		spec := f.serviceSpec(name)
		spec.Initramfs = initrd
		if err := d.Create(ctx, spec); err != nil {
			t.Fatal(err)
		}
		if err := d.Start(ctx, name); err != nil {
			t.Fatal(err)
		}
		d.Kill(ctx, name)
		if i == 0 {
			first = snaps()
		}
	}
	last := snaps()
	if len(first) != 1 || len(last) != 1 || first[0] == last[0] {
		t.Errorf("templates: %v after the first VM, %v after the second; want one each, not the same", first, last)
	}
	left, _ := filepath.Glob(filepath.Join(templates, strings.TrimSuffix(filepath.Base(first[0]), ".snap")+".*"))
	if len(left) != 0 {
		t.Errorf("files of the stale template left: %v", left)
	}
	builds, _ := filepath.Glob(filepath.Join(templates, ".build-*"))
	if want := []string{filepath.Join(templates, ".build-"+liveKey)}; !slices.Equal(builds, want) {
		t.Errorf("build folders after the second build: %v, want only the live one %v", builds, want)
	}
	if _, err := os.Stat(filepath.Join(templates, staleKey+".ram.tmp")); !os.IsNotExist(err) {
		t.Errorf("the interrupted build's memory file is left: %v", err)
	}
}

const (
	staleKey = "0123456789abcdef0123456789abcdef"
	liveKey  = "fedcba9876543210fedcba9876543210"
)

// plantBuilds leaves in templates what a build interrupted a moment ago
// (its supervisor was killed) leaves, and the folder of a build that
// another process runs: it holds the template's lock.
func plantBuilds(t *testing.T, templates string) {
	t.Helper()
	for _, key := range []string{staleKey, liveKey} {
		dir := filepath.Join(templates, ".build-"+key)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "console.log"), []byte("booting\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(templates, key+".ram.tmp"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(templates, staleKey+".lock"), nil, 0o644)
	holder := exec.Command("flock", filepath.Join(templates, liveKey+".lock"), "sh", "-c", "echo locked; exec sleep 600")
	holder.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // to end flock and its sleep
	out, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Skipf("flock(1) (util-linux): %v", err)
	}
	t.Cleanup(func() { syscall.Kill(-holder.Process.Pid, syscall.SIGKILL); holder.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "locked\n" {
		t.Fatalf("flock: %q", line)
	}
}
