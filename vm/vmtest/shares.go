//go:build linux

package vmtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/vm"
)

// shareDirs makes the sources of the share checks: rw/ and ro/, each with
// an in.txt, and file.txt on its own.
func shareDirs(t *testing.T) (dir string, shares []vm.Share) {
	dir = t.TempDir()
	for _, d := range []string{"rw", "ro", "single"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, d, "in.txt"), []byte("hello "+d+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The guest sees the host's owners and modes.
	if err := os.Chown(filepath.Join(dir, "rw", "in.txt"), 1234, 5678); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "rw", "in.txt"), 0o640); err != nil {
		t.Fatal(err)
	}
	return dir, []vm.Share{
		{Tag: "rw", Source: filepath.Join(dir, "rw")},
		{Tag: "ro", Source: filepath.Join(dir, "ro"), ReadOnly: true},
		// A file: the guest sees a share holding in.txt alone.
		{Tag: "file", Source: filepath.Join(dir, "single", "in.txt")},
	}
}

func (s *suite) shareSpec(name, mode string, shares []vm.Share) vm.Spec {
	tags := make([]string, len(shares))
	for i, sh := range shares {
		tags[i] = sh.Tag
	}
	sp := s.spec(name, mode, "vmtest.shares="+strings.Join(tags, ","))
	sp.Shares = shares
	return sp
}

// shares: the guest reads and writes a shared directory, cannot write a
// read-only one even when it remounts it read-write, and sees a shared
// file alone in its share; its writes are on the host when it has powered
// off, and no helper process outlives the VM.
func (s *suite) shares(t *testing.T) {
	if !s.fx.Shares {
		t.Skip("the backend cannot serve shares on this host")
	}
	ctx := ctxT(t, 3*time.Minute)
	dir, shares := shareDirs(t)

	missing := s.shareSpec("sharemissing", "exit", []vm.Share{{Tag: "gone", Source: filepath.Join(dir, "absent")}})
	if err := s.d.Create(ctx, missing); err != nil {
		t.Fatal(err)
	}
	if err := s.d.Start(ctx, "sharemissing"); err == nil || !strings.Contains(err.Error(), "sharemissing") || !strings.Contains(err.Error(), "gone") {
		t.Errorf("Start with a missing share source = %v, want an error naming the VM and the share", err)
	}
	if err := s.d.Remove(ctx, "sharemissing"); err != nil {
		t.Fatal(err)
	}

	if err := s.d.Create(ctx, s.shareSpec("shares", "exit", shares)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.d.Kill(context.Background(), "shares") })
	t0 := time.Now()
	if err := s.d.Start(ctx, "shares"); err != nil {
		t.Fatal(err)
	}
	st := s.wait(t, "shares")
	t.Logf("boot with %d shares to power-off: %v", len(shares), time.Since(t0))
	for _, line := range []string{
		"share rw: stat=640 1234:5678",
		"share rw: read=hello rw",
		"share rw: append=ok",
		"share rw: create=ok",
		"share ro: read=hello ro",
		"share ro: append=EROFS",
		"share ro: create=EROFS",
		"share ro: remounted append=EROFS create=EROFS",
		"share file: read=hello single",
		"share file: append=ok",
		// Nothing can be added beside a shared file.
		"share file: create=EROFS",
		"share file: remounted append=ok create=EROFS",
	} {
		if countLines(st.Console, "vmtest: "+line) != 1 {
			b, _ := os.ReadFile(st.Console)
			t.Errorf("console lacks %q:\n%s", line, tail(b, 3000))
		}
	}
	for path, want := range map[string]string{
		"rw/in.txt":     "hello rw\nappended by guest\n",
		"rw/out.txt":    "from guest\n",
		"ro/in.txt":     "hello ro\n",
		"single/in.txt": "hello single\nappended by guest\nappended by guest\n",
	} {
		if b, err := os.ReadFile(filepath.Join(dir, path)); err != nil || string(b) != want {
			t.Errorf("host %s = %q, %v; want %q", path, b, err, want)
		}
	}
	for _, absent := range []string{"ro/out.txt", "single/out.txt"} {
		if _, err := os.Stat(filepath.Join(dir, absent)); err == nil {
			t.Errorf("the guest created %s on the host", absent)
		}
	}
	s.noShareProcesses(t, "shares", 0)
	if err := s.d.Remove(ctx, "shares"); err != nil {
		t.Fatal(err)
	}
	// Remove deletes the VM's files, never the shared ones.
	if b, err := os.ReadFile(filepath.Join(dir, "rw", "in.txt")); err != nil || len(b) == 0 {
		t.Errorf("after Remove, the shared directory lost its file: %q, %v", b, err)
	}
}

// sharesEndWithVM: the helpers of a VM with shares end with it, whether it
// is killed or stopped.
func (s *suite) sharesEndWithVM(t *testing.T) {
	if !s.fx.Shares {
		t.Skip("the backend cannot serve shares on this host")
	}
	ctx := ctxT(t, 3*time.Minute)
	_, shares := shareDirs(t)
	if err := s.d.Create(ctx, s.shareSpec("sharekill", "wait", shares)); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.d.Kill(context.Background(), "sharekill") })
	for _, how := range []string{"kill", "stop"} {
		if err := s.d.Start(ctx, "sharekill"); err != nil {
			t.Fatal(err)
		}
		st := s.inspect(t, "sharekill")
		s.waitConsole(t, st.Console, "vmtest: waiting", 1)
		s.someShareProcesses(t, "sharekill")
		var err error
		if how == "kill" {
			err = s.d.Kill(ctx, "sharekill")
		} else {
			err = s.d.Stop(ctx, "sharekill", 30*time.Second)
		}
		if err != nil {
			t.Fatal(err)
		}
		s.noShareProcesses(t, "sharekill", 0)
		// The next boot starts from a clean slate.
		os.Truncate(st.Console, 0)
	}
	if err := s.d.Remove(ctx, "sharekill"); err != nil {
		t.Fatal(err)
	}
}

// adoptShares: a VM with shares whose controller died keeps its helpers,
// a new driver adopts it, and they end when it stops. With
// DieWithController, they end with the controller.
func (s *suite) adoptShares(t *testing.T) {
	if !s.fx.Shares {
		t.Skip("the backend cannot serve shares on this host")
	}
	ctx := ctxT(t, 3*time.Minute)
	_, shares := shareDirs(t)
	s.startOrphan(t, s.shareSpec("shareorphan", "wait", shares[:1]), false)
	d := s.fx.NewDriver(t, s.root, nil)
	t.Cleanup(func() { d.Kill(context.Background(), "shareorphan") })
	st, err := d.Inspect(ctx, "shareorphan")
	if err != nil {
		t.Fatal(err)
	}
	if st.State != vm.StateRunning {
		t.Fatalf("VM with a share of a dead controller: %+v, want running", st)
	}
	s.waitConsole(t, st.Console, "vmtest: waiting", 1)
	if countLines(st.Console, "vmtest: share rw: create=ok") != 1 {
		t.Errorf("the adopted VM's share did not work (console %s)", st.Console)
	}
	s.someShareProcesses(t, "shareorphan")
	if err := d.Stop(ctx, "shareorphan", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	s.noShareProcesses(t, "shareorphan", 0)
	if err := d.Remove(ctx, "shareorphan"); err != nil {
		t.Fatal(err)
	}

	tied := s.shareSpec("sharetied", "wait", shares[:1])
	tied.DieWithController = true
	s.startOrphan(t, tied, true)
	deadline := time.Now().Add(10 * time.Second)
	for s.inspect(t, "sharetied").State != vm.StateExited {
		if time.Now().After(deadline) {
			s.d.Kill(context.Background(), "sharetied")
			t.Fatal("VM with a share tied to a dead controller still runs after 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.noShareProcesses(t, "sharetied", 5*time.Second)
	if err := s.d.Remove(ctx, "sharetied"); err != nil {
		t.Fatal(err)
	}
}

// someShareProcesses fails unless VM name has share helper processes.
func (s *suite) someShareProcesses(t *testing.T, name string) {
	t.Helper()
	if s.fx.ShareProcessName == "" {
		return
	}
	if len(Processes(s.fx.ShareProcessName, filepath.Join(s.root, name)+"/")) == 0 {
		t.Errorf("VM %s runs with shares but has no %s process", name, s.fx.ShareProcessName)
	}
}

// noShareProcesses fails if VM name, which does not run, still has share
// helper processes after grace: none when the driver ended the VM, a
// moment when the VM died with its controller.
func (s *suite) noShareProcesses(t *testing.T, name string, grace time.Duration) {
	t.Helper()
	if s.fx.ShareProcessName == "" {
		return
	}
	deadline := time.Now().Add(grace)
	for {
		pids := Processes(s.fx.ShareProcessName, filepath.Join(s.root, name)+"/")
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%s processes of VM %s left after it ended: %v", s.fx.ShareProcessName, name, pids)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
