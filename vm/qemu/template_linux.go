package qemu

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/internal/atomicfile"
	"github.com/vmcompose/vmcompose/internal/flock"
	"github.com/vmcompose/vmcompose/vm"
	"github.com/vmcompose/vmcompose/vm/initramfs"
)

// Templates
//
// Under TCG most of a VM's boot is the kernel's: about 1.2 s before the
// init runs. A template is a VM that booted the kernel and the initramfs
// with its control channel only, then was saved (QMP stop + migrate to a
// file) while vminit waited (agent.PhaseTemplate). Each VM of the same
// machine (kernel, initramfs, kernel command line, vCPUs, memory,
// accelerator, QEMU) is restored from it with its own disks and NICs on
// the transports the template left empty, and vminit, resumed by the
// host's agent client, probes them and carries on from there. The guest
// must be vminit: the kernel command line of templates has
// vminit.template.
//
// What copies share, and how it is undone: the random number generator
// state (the host's entropy is mixed in and the generator reseeded before
// anything else runs), the clock (set from the host), the kernel's own
// address layout (not undone: every copy of one template has the same
// KASLR offset, as clones of any VM snapshot do).

// TemplatesEnv set to 0 turns WithTemplates off.
const TemplatesEnv = "VMCOMPOSE_TEMPLATES"

// WithTemplates makes the driver boot VMs from templates kept in dir (see
// above), building each the first time a VM needs it, unless TemplatesEnv
// is 0. A VM whose template cannot be built or restored boots cold.
func WithTemplates(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return errors.New("templates: no directory")
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return fmt.Errorf("templates: %w", err)
		}
		o.templates = abs
		return nil
	}
}

const (
	// templateFormat is part of every template's key: change it when what
	// a template holds changes in a way its inputs do not show.
	templateFormat = "vmcompose template 2"
	// templateFlag on the kernel command line makes vminit wait as a
	// template.
	templateFlag = "vminit.template"
	// templateReady is the line vminit logs when the template can be
	// saved.
	templateReady = `msg="template ready"`
	// templateTimeout bounds building a template.
	templateTimeout = 2 * time.Minute
	// templateRetry is how long after a failed build VMs boot cold
	// before the next attempt.
	templateRetry = 10 * time.Minute
)

// template is a saved VM and the initramfs it booted from, which its
// copies boot with too.
type template struct {
	key    string
	snap   string // the device state
	ram    string // the guest's memory (a sparse file)
	initrd string
	meta   string
	failed string
	lock   string // held while the template is built
	build  string // the folder of the VM a build boots
}

func (d *Driver) templateFiles(key string) *template {
	p := filepath.Join(d.o.templates, key)
	return &template{key: key, snap: p + ".snap", ram: p + ".ram", initrd: p + ".initrd", meta: p + ".json", failed: p + ".failed",
		lock: p + ".lock", build: filepath.Join(d.o.templates, buildPrefix+key)}
}

// buildPrefix starts the name of a build's folder in the templates
// directory; the template's key follows.
const buildPrefix = ".build-"

// remove deletes the template's files.
func (t *template) remove() {
	for _, f := range []string{t.snap, t.ram, t.initrd, t.meta} {
		os.Remove(f)
	}
}

// templateMeta is a template's .json: what it was built from, so that
// templates of a kernel, initramfs or QEMU that is gone or was replaced
// can be removed.
type templateMeta struct {
	Created time.Time       `json:"created"`
	Inputs  []templateInput `json:"inputs"` // QEMU, the kernel, the initramfs
	Memory  int64           `json:"memory"`
	VCPUs   int             `json:"vcpus"`
}

// templateInput is a file a template was built from, as it was then.
type templateInput struct {
	Path    string    `json:"path"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"mtime"`
}

// templateInputs stats the files a template of spec is built from.
func (d *Driver) templateInputs(spec vm.Spec) ([]templateInput, error) {
	var in []templateInput
	for _, f := range []string{d.o.binary, spec.Kernel, spec.Initramfs} {
		fi, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		in = append(in, templateInput{Path: f, Size: fi.Size(), ModTime: fi.ModTime().UTC()})
	}
	return in, nil
}

// current reports whether every input is as it was.
func (in templateInput) current() bool {
	fi, err := os.Stat(in.Path)
	return err == nil && fi.Size() == in.Size && fi.ModTime().Equal(in.ModTime)
}

// templateSpec is spec as its template boots: the same machine with its
// control channel only.
func templateSpec(spec vm.Spec, t *template) vm.Spec {
	return vm.Spec{
		Name:      "template",
		VCPUs:     spec.VCPUs,
		Memory:    spec.Memory,
		Kernel:    spec.Kernel,
		Initramfs: t.initrd,
		Cmdline:   append(append([]string(nil), spec.Cmdline...), templateFlag),
	}
}

// restoreSpec is spec as it is restored from t.
func restoreSpec(spec vm.Spec, t *template) vm.Spec {
	spec.Initramfs = t.initrd
	spec.Cmdline = append(append([]string(nil), spec.Cmdline...), templateFlag)
	return spec
}

// template returns the template spec boots from, building it first if
// needed, or nil when spec boots cold: templates are off, the VM has no
// initramfs (so no vminit) or shares, or its template failed to build less
// than templateRetry ago.
func (d *Driver) template(ctx context.Context, spec vm.Spec, accel string) *template {
	if d.o.templates == "" || spec.Initramfs == "" {
		return nil
	}
	if len(spec.Shares) > 0 {
		// Shares make the guest's memory a shared memfd for virtiofsd:
		// another machine than the template's.
		return nil
	}
	key, err := d.templateKey(spec, accel)
	if err != nil {
		d.o.log.Warn("template key", "err", err)
		return nil
	}
	t := d.templateFiles(key)
	if _, err := os.Stat(t.snap); err == nil {
		return t
	}
	if fi, err := os.Stat(t.failed); err == nil && time.Since(fi.ModTime()) < templateRetry {
		return nil
	}
	if err := os.MkdirAll(d.o.templates, 0o755); err != nil {
		d.o.log.Warn("templates", "err", err)
		return nil
	}
	unlock, err := flock.Lock(ctx, t.lock, false)
	if err != nil {
		return nil
	}
	defer unlock()
	if _, err := os.Stat(t.snap); err == nil {
		return t // built by another process while we waited
	}
	start := time.Now()
	if err := d.buildTemplate(ctx, spec, accel, t); err != nil {
		if ctx.Err() == nil {
			d.o.log.Warn("building a template failed: VMs of this machine boot cold for now", "template", t.snap, "err", err)
			os.WriteFile(t.failed, []byte(err.Error()+"\n"), 0o644)
		}
		t.remove()
		return nil
	}
	os.Remove(t.failed)
	d.o.log.Info("template built", "template", t.snap, "took", time.Since(start).Round(time.Millisecond))
	d.removeStaleTemplates()
	return t
}

// templateKey names the template of spec's machine: a hash of everything
// the template's qemu command line says and of the files it reads.
func (d *Driver) templateKey(spec vm.Spec, accel string) (string, error) {
	h := sha256.New()
	fmt.Fprintln(h, templateFormat)
	inputs, err := d.templateInputs(spec)
	if err != nil {
		return "", err
	}
	for _, in := range inputs {
		fmt.Fprintln(h, in.Path, in.Size, in.ModTime.UnixNano())
	}
	args := d.args(templateSpec(spec, &template{initrd: "initrd"}), accel, &memoryFile{path: "ram", shared: true})
	fmt.Fprintln(h, strings.Join(args, "\x00"))
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

// buildTemplate boots spec's machine as a template in a directory of its
// own, waits for vminit to say it is ready and saves it to t.snap.
func (d *Driver) buildTemplate(ctx context.Context, spec vm.Spec, accel string, t *template) error {
	ctx, cancel := context.WithTimeout(ctx, templateTimeout)
	defer cancel()
	if err := writeTemplateInitrd(spec.Initramfs, t.initrd); err != nil {
		return err
	}
	// The caller holds the key's lock: a folder of this name is what an
	// interrupted build of the key left.
	dir := t.build
	os.RemoveAll(dir)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	logf, err := os.Create(filepath.Join(dir, qemuLog))
	if err != nil {
		return err
	}
	defer logf.Close()
	ram := t.ram + ".tmp"
	defer os.Remove(ram)
	args := d.args(templateSpec(spec, t), accel, &memoryFile{path: ram, shared: true})
	c, err := d.spawn(dir, args, logf, true, false)
	if err != nil {
		return err
	}
	stop := func() {
		select {
		case <-c.done: // reaped: its pid may be another process's now
		default:
			unix.Kill(c.pid, unix.SIGKILL)
			<-c.done
		}
	}
	defer stop()
	console := filepath.Join(dir, consoleLog)
	for {
		b, _ := os.ReadFile(console)
		if bytes.Contains(b, []byte(templateReady)) {
			break
		}
		select {
		case <-c.done:
			out, _ := os.ReadFile(filepath.Join(dir, qemuLog))
			return fmt.Errorf("the template VM ended before it was ready: %s%s", lastLine(out), consoleTail(b))
		case <-ctx.Done():
			return fmt.Errorf("waiting for the template VM: %w%s", ctx.Err(), consoleTail(b))
		case <-time.After(10 * time.Millisecond):
		}
	}
	q, err := dialQMP(ctx, filepath.Join(dir, qmpSock))
	if err != nil {
		return err
	}
	defer q.close()
	tmp := t.snap + ".tmp"
	defer os.Remove(tmp)
	if err := saveVM(ctx, q, tmp); err != nil {
		return err
	}
	// The VM stays stopped once saved: its memory file is the state it
	// was saved in.
	stop()
	for _, p := range []string{tmp, ram} {
		if err := syncFile(p); err != nil {
			return err
		}
	}
	if err := os.Rename(ram, t.ram); err != nil {
		return err
	}
	inputs, err := d.templateInputs(spec)
	if err != nil {
		return err
	}
	meta := templateMeta{Created: time.Now().UTC(), Inputs: inputs, Memory: spec.Memory, VCPUs: spec.VCPUs}
	if err := writeJSON(t.meta, meta); err != nil {
		return err
	}
	return os.Rename(tmp, t.snap)
}

// ignoreShared leaves the memory out of a saved state (QEMU 7.2 takes the
// capability through QMP only).
func ignoreShared(ctx context.Context, q *qmp) error {
	_, err := q.exec(ctx, "migrate-set-capabilities", map[string]any{
		"capabilities": []map[string]any{{"capability": "x-ignore-shared", "state": true}},
	})
	return err
}

// syncFile flushes a file to disk.
func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// writeTemplateInitrd writes the initramfs templates boot from: the ACPI
// table that describes every virtio-mmio transport, then the VM's own
// initramfs.
func writeTemplateInitrd(initrd, path string) error {
	ssdt, err := initramfs.ACPITables(map[string][]byte{"vmcompose-transports.aml": transportsSSDT()})
	if err != nil {
		return err
	}
	src, err := os.Open(initrd)
	if err != nil {
		return err
	}
	defer src.Close()
	err = atomicfile.Write(path, 0o600, func(f *os.File) error {
		if _, err := f.Write(ssdt); err != nil {
			return err
		}
		_, err := io.Copy(f, src)
		return err
	})
	if err != nil {
		return fmt.Errorf("template initramfs: %w", err)
	}
	return nil
}

// saveVM writes the VM's state to path. The VM is saved running (QEMU
// stops it for the last pass only), so that its copies start running as
// soon as they are loaded, with no "cont" that a host dying at the wrong
// moment would leave unsent.
func saveVM(ctx context.Context, q *qmp, path string) error {
	// Migration is throttled to 32 MiB/s by default: a file takes all
	// it can.
	if _, err := q.exec(ctx, "migrate-set-parameters", map[string]any{"max-bandwidth": int64(10 << 30)}); err != nil {
		return err
	}
	if err := ignoreShared(ctx, q); err != nil {
		return err
	}
	if _, err := q.exec(ctx, "migrate", map[string]any{"uri": "exec:cat > " + shellQuote(path)}); err != nil {
		return err
	}
	for {
		st, err := queryStatus(ctx, q, "query-migrate")
		if err != nil {
			return err
		}
		switch st.Status {
		case "completed":
			return nil
		case "failed", "cancelled":
			return fmt.Errorf("saving the template VM: migration %s: %s", st.Status, st.ErrorDesc)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("saving the template VM: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// qmpStatus is what query-status and query-migrate answer.
type qmpStatus struct {
	Status    string `json:"status"`
	ErrorDesc string `json:"error-desc"`
}

// queryStatus runs cmd, query-status or query-migrate.
func queryStatus(ctx context.Context, q *qmp, cmd string) (qmpStatus, error) {
	var st qmpStatus
	raw, err := q.exec(ctx, cmd, nil)
	if err == nil {
		err = json.Unmarshal(raw, &st)
	}
	return st, err
}

// finishRestore takes over the restore of a VM whose Start died while its
// qemu waited for the template to be loaded (started with "-incoming
// defer", which a saved template's memory file needs): it loads the state
// and lets the VM run, or kills a qemu that does not. The caller holds the
// VM's lock, so no Start is under way.
func (d *Driver) finishRestore(ctx context.Context, name string) {
	marker := d.path(name, restoringFile)
	if _, err := os.Stat(marker); err != nil {
		return
	}
	defer os.Remove(marker)
	r, running, err := d.current(name)
	if err != nil || !running {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	q, err := dialQMP(ctx, d.path(name, qmpSock))
	if err == nil {
		err = restoreIncoming(ctx, q)
		q.close()
	}
	if err == nil {
		d.o.log.Info("finished the restore of a VM whose start was cut short", "vm", name)
		return
	}
	d.o.log.Warn("killing a VM whose restore was cut short and cannot be finished", "vm", name, "err", err)
	d.kill(ctx, name, r)
}

// restoreIncoming loads the saved state that a qemu started with
// "-incoming defer" has as fd 3, unless that is under way already, and
// waits for the VM to run; a VM saved stopped is let run.
func restoreIncoming(ctx context.Context, q *qmp) error {
	if err := loadIncoming(ctx, q); err != nil {
		return fmt.Errorf("restoring from the template: %w", err)
	}
	return nil
}

func loadIncoming(ctx context.Context, q *qmp) error {
	mig, err := queryStatus(ctx, q, "query-migrate")
	if err != nil {
		return err
	}
	if mig.Status == "" || mig.Status == "none" { // not asked to load yet
		if err := ignoreShared(ctx, q); err != nil {
			return err
		}
		if _, err := q.exec(ctx, "migrate-incoming", map[string]any{"uri": "fd:3"}); err != nil {
			return err
		}
	}
	for {
		st, err := queryStatus(ctx, q, "query-status")
		if err != nil {
			return err
		}
		switch st.Status {
		case "inmigrate":
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(2 * time.Millisecond):
			}
		case "paused", "postmigrate", "prelaunch":
			_, err := q.exec(ctx, "cont", nil)
			return err
		case "running":
			return nil
		default:
			return fmt.Errorf("the VM is %s", st.Status)
		}
	}
}

// removeStaleTemplates removes the templates built from a kernel,
// initramfs or QEMU that is gone or was replaced (their key can never come
// up again), and builds that were interrupted.
func (d *Driver) removeStaleTemplates() {
	metas, _ := filepath.Glob(filepath.Join(d.o.templates, "*.json"))
	for _, m := range metas {
		var meta templateMeta
		if readJSON(m, &meta) != nil {
			continue
		}
		for _, in := range meta.Inputs {
			if !in.current() {
				t := d.templateFiles(strings.TrimSuffix(filepath.Base(m), ".json"))
				d.o.log.Info("removing a template whose inputs changed", "template", t.snap, "input", in.Path)
				t.remove()
				os.Remove(t.failed)
				os.Remove(t.lock)
				break
			}
		}
	}
	builds, _ := filepath.Glob(filepath.Join(d.o.templates, buildPrefix+"*"))
	for _, b := range builds {
		d.removeStaleBuild(b)
	}
}

// removeStaleBuild removes the folder b of a build that ended without
// removing it (its process was killed), with the build's temporary files.
// A build runs while its process holds the template's lock: a folder
// whose lock is held is left alone. Folders of older versions
// (.build-<12 hex>-<random>) name no lock and go once older than any
// build can be.
func (d *Driver) removeStaleBuild(b string) {
	key := strings.TrimPrefix(filepath.Base(b), buildPrefix)
	if strings.Contains(key, "-") {
		if fi, err := os.Stat(b); err == nil && time.Since(fi.ModTime()) > 2*templateTimeout {
			os.RemoveAll(b)
		}
		return
	}
	t := d.templateFiles(key)
	if _, err := os.Stat(t.lock); err == nil {
		unlock, ok, err := flock.TryLock(t.lock)
		if err != nil || !ok {
			return
		}
		defer unlock()
	} // else no build of the key runs: it would hold the lock
	d.o.log.Info("removing an interrupted template build", "dir", b)
	os.RemoveAll(b)
	os.Remove(t.ram + ".tmp")
	os.Remove(t.snap + ".tmp")
}

// consoleTail is the end of a console log, for error messages.
func consoleTail(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return ""
	}
	if len(b) > 600 {
		b = b[len(b)-600:]
	}
	return "\nlast boot messages:\n" + string(b)
}

// shellQuote quotes s for /bin/sh.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
