package agentd

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/guest/netconf"
	"github.com/vmcompose/vmcompose/guest/resolve"
)

// prepare sets the guest up as spec says, all but the process (and a
// read_only root's remount, so that a sync can still write to it): the
// guest is in PhasePrepared until launchPrepared.
func (s *Server) prepare(spec agent.Spec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.bootErr != nil {
		return fmt.Errorf("%w: %v", agent.ErrBootFailed, s.bootErr)
	}
	if s.phase != agent.PhaseReady {
		return agent.ErrAlreadyStarted
	}
	if err := checkUlimits(spec.Ulimits); err != nil {
		return err
	}
	if _, err := stopSignal(spec); err != nil {
		return err
	}
	if err := setIdentity(spec); err != nil {
		return err
	}
	if err := mountVolumes(spec.Mounts); err != nil {
		return err
	}
	if err := writeFiles(spec.Files); err != nil {
		return err
	}
	if err := netconf.Configure(spec.Networks); err != nil {
		return fmt.Errorf("%w: %v", agent.ErrInvalid, err)
	}
	if err := setSysctls(spec.Sysctls); err != nil {
		return err
	}
	if spec.ShmSize > 0 {
		if err := unix.Mount("shm", "/dev/shm", "tmpfs", unix.MS_REMOUNT|unix.MS_NOSUID|unix.MS_NODEV, fmt.Sprintf("mode=1777,size=%d", spec.ShmSize)); err != nil {
			return fmt.Errorf("%w: shm_size %d: %v", agent.ErrInvalid, spec.ShmSize, err)
		}
	}
	if _, _, err := serviceProcess(spec); err != nil {
		return err
	}
	s.spec = &spec
	s.phase = agent.PhasePrepared
	return nil
}

// launchPrepared starts the process of the spec prepare took. The
// command is resolved again: a sync may have put the program in place.
func (s *Server) launchPrepared() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.phase {
	case agent.PhasePrepared:
	case agent.PhaseReady, agent.PhaseTemplate, agent.PhaseBooting:
		return fmt.Errorf("%w: launch before prepare", agent.ErrNotStarted)
	case agent.PhaseFailed:
		return fmt.Errorf("%w: %v", agent.ErrBootFailed, s.bootErr)
	default:
		return agent.ErrAlreadyStarted
	}
	spec := *s.spec
	argv, p, err := serviceProcess(spec)
	if err != nil {
		return err
	}
	if spec.ReadOnly {
		if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("read_only: remounting the root read-only: %w", err)
		}
	}
	if err := s.launch(spec, argv, p); err != nil {
		return err
	}
	close(s.started)
	return nil
}

// serviceProcess resolves the service's command, user, environment and
// working directory (made when missing).
func serviceProcess(spec agent.Spec) ([]string, procSpec, error) {
	argv, err := resolve.Argv(spec.Image.Entrypoint, spec.Image.Cmd, spec.Entrypoint, spec.Command)
	if err != nil {
		return nil, procSpec{}, fmt.Errorf("%w: %v", agent.ErrInvalid, err)
	}
	p, err := processSpec(spec, nil, "", "", argv)
	return argv, p, err
}

// launch starts the service process p and follows it, its output going to
// the rings. The caller holds s.mu.
func (s *Server) launch(spec agent.Spec, argv []string, p procSpec) error {
	// outs are what the service writes: two pipes, or one terminal; in is
	// where its input goes.
	outs, in, childFiles, err := serviceStdio(&p, spec)
	if err != nil {
		return err
	}
	pid, wait, err := s.reaper.start(p)
	for _, f := range childFiles {
		f.Close()
	}
	if err != nil {
		closeAll(append(outs, in))
		return err
	}
	s.log.Info("service started", "pid", pid, "argv", argv, "uid", p.user.Uid, "gid", p.user.Gid, "tty", spec.Tty, "stdin", spec.OpenStdin)
	s.input = in
	s.pid = pid
	s.phase = agent.PhaseRunning

	copied := make(chan struct{}, len(outs))
	rings := []*ring{s.stdout, s.stderr}
	for i, f := range outs {
		go func() {
			io.Copy(rings[i], f)
			copied <- struct{}{}
		}()
	}
	go s.follow(pid, wait, outs, in, copied)
	return nil
}

// follow waits for the service process to exit. Asked to restart (and not
// to stop meanwhile), it starts it again once its output ended; otherwise
// the service has exited.
func (s *Server) follow(pid int, wait <-chan unix.WaitStatus, outs []*os.File, in *os.File, copied <-chan struct{}) {
	ws := <-wait
	exit := exitStatus(ws)
	// The pid is free now: no signal may go to it any more.
	s.mu.Lock()
	restart := s.restarting
	again := restart != nil && s.phase == agent.PhaseRunning
	if !again {
		s.log.Info("service exited", "pid", pid, "code", exit.Code, "signal", exit.Signal)
		s.exit = exit
		s.phase = agent.PhaseExited
	} else {
		s.log.Info("service process ended for a restart", "pid", pid, "code", exit.Code, "signal", exit.Signal)
	}
	s.mu.Unlock()
	// As when a container's main process ends: everything else in
	// the guest ends with it, which also closes the output pipes
	// that background processes inherited.
	unix.Kill(-1, unix.SIGKILL)
	s.drain(len(outs), copied)
	closeAll(append(outs, in))
	if again && s.relaunch(restart, exit) {
		return
	}
	if restart != nil && !again {
		s.endRestart(restart, agent.ErrExited)
	}
	s.stdout.Close()
	s.stderr.Close()
	close(s.exited)
}

// drain waits for the service's output to end, as long as it keeps
// coming: an attached host that reads slowly holds the copy back.
func (s *Server) drain(n int, copied <-chan struct{}) {
	tick := time.NewTicker(drainTimeout)
	defer tick.Stop()
	last := s.stdout.written() + s.stderr.written()
	for left := n; left > 0; {
		select {
		case <-copied:
			left--
		case <-tick.C:
			now := s.stdout.written() + s.stderr.written()
			if now == last {
				return
			}
			last = now
		}
	}
}

func closeAll(files []*os.File) {
	for _, f := range files {
		if f != nil {
			f.Close()
		}
	}
}

// restartDone is how a restart ended: the new pid, or why the service
// did not start again.
type restartDone struct {
	pid int
	err error
}

// handleRestart restarts the service process in place and answers with
// its new pid.
func (s *Server) handleRestart(st net.Conn) error {
	pid, err := s.restart()
	if err != nil {
		return s.reply(st, errResponse(err))
	}
	return s.reply(st, agent.Response{Pid: pid})
}

// restart stops the service process as stop does (the stop signal, then
// after the grace period SIGKILL to every process) and waits for follow to
// start it again.
func (s *Server) restart() (int, error) {
	s.mu.Lock()
	switch s.phase {
	case agent.PhaseRunning:
	case agent.PhaseStopping, agent.PhaseExited:
		s.mu.Unlock()
		return 0, agent.ErrExited
	default:
		s.mu.Unlock()
		return 0, agent.ErrNotStarted
	}
	if s.restarting != nil {
		s.mu.Unlock()
		return 0, fmt.Errorf("%w: the service is restarting already", agent.ErrInvalid)
	}
	done := make(chan restartDone, 1)
	s.restarting = done
	sig, grace := s.stopping()
	s.log.Info("restarting the service", "signal", unix.SignalName(sig), "grace", grace)
	unix.Kill(s.pid, sig)
	s.mu.Unlock()
	select {
	case r := <-done:
		return r.pid, r.err
	case <-time.After(grace):
		s.log.Info("grace period over: killing every process")
		unix.Kill(-1, unix.SIGKILL)
	}
	r := <-done
	return r.pid, r.err
}

// stopping is the stop signal and grace period of the service. The
// caller holds s.mu.
func (s *Server) stopping() (unix.Signal, time.Duration) {
	sig, _ := stopSignal(*s.spec)
	grace := agent.DefaultStopGracePeriod
	if s.spec.StopGracePeriod != nil {
		grace = max(0, *s.spec.StopGracePeriod)
	}
	return sig, grace
}

// relaunch starts the service process again from its spec, for restart
// r, and reports whether it runs. When it cannot start (its command was
// deleted), that is the service's exit, with docker's status for it; when
// a stop came while the old process's output drained, its exit is.
func (s *Server) relaunch(r chan restartDone, old agent.ExitStatus) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.restarting = nil
	if s.phase != agent.PhaseRunning {
		s.log.Info("service exited", "code", old.Code, "signal", old.Signal, "during", "a restart")
		s.exit, s.phase = old, agent.PhaseExited
		r <- restartDone{err: agent.ErrExited}
		return false
	}
	spec := *s.spec
	argv, p, err := serviceProcess(spec)
	if err == nil {
		err = s.launch(spec, argv, p)
	}
	if err != nil {
		s.log.Error("restarting the service", "err", err)
		code := 126
		if errors.Is(err, agent.ErrCommandNotFound) {
			code = 127
		}
		s.log.Info("service exited", "code", code)
		s.exit, s.phase = agent.ExitStatus{Code: code}, agent.PhaseExited
		r <- restartDone{err: err}
		return false
	}
	r <- restartDone{pid: s.pid}
	return true
}

// endRestart answers a restart that did not happen: the service was
// stopped meanwhile.
func (s *Server) endRestart(r chan restartDone, err error) {
	s.mu.Lock()
	s.restarting = nil
	s.mu.Unlock()
	r <- restartDone{err: err}
}

// serviceStdio gives p its standard files: /dev/null (a pipe with
// OpenStdin) and two pipes, or a terminal for all three (compose's `tty`).
// It returns the ends vminit reads, stdout first; the end input frames go
// to (the pipe's, the terminal's; nil when neither); and the child's ends,
// to close once it started.
func serviceStdio(p *procSpec, spec agent.Spec) (outs []*os.File, in *os.File, child []*os.File, err error) {
	if spec.Tty {
		m, t, err := pty.Open()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("pty: %w", err)
		}
		size := pty.Winsize{Rows: 24, Cols: 80}
		if spec.Rows > 0 && spec.Cols > 0 {
			size = pty.Winsize{Rows: spec.Rows, Cols: spec.Cols}
		}
		pty.Setsize(m, &size)
		if _, ok := resolve.Lookup(p.env, "TERM"); !ok {
			p.env = append(p.env, "TERM=xterm")
		}
		p.stdin, p.stdout, p.stderr, p.tty = t, t, t, true
		return []*os.File{m}, m, []*os.File{t}, nil
	}
	var files []*os.File // all of them, to close on an error
	pipe := func() (r, w *os.File, err error) {
		if r, w, err = os.Pipe(); err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	defer func() {
		if err != nil {
			for _, f := range files {
				f.Close()
			}
		}
	}()
	outR, outW, err := pipe()
	if err != nil {
		return nil, nil, nil, err
	}
	errR, errW, err := pipe()
	if err != nil {
		return nil, nil, nil, err
	}
	p.stdout, p.stderr = outW, errW
	outs, child = []*os.File{outR, errR}, []*os.File{outW, errW}
	if spec.OpenStdin {
		inR, inW, err := pipe()
		if err != nil {
			return nil, nil, nil, err
		}
		p.stdin, in = inR, inW
		child = append(child, inR)
	}
	return outs, in, child, nil
}

// stop sends the stop signal and, after the grace period, SIGKILL to every
// process. It reports false when the service never started.
func (s *Server) stop() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.phase {
	case agent.PhaseRunning:
	case agent.PhaseStopping, agent.PhaseExited:
		return true
	default:
		return false
	}
	sig, grace := s.stopping()
	s.phase = agent.PhaseStopping
	s.log.Info("stopping the service", "signal", unix.SignalName(sig), "grace", grace)
	unix.Kill(s.pid, sig)
	go func() {
		select {
		case <-s.exited:
		case <-time.After(grace):
			s.log.Info("grace period over: killing every process")
			unix.Kill(-1, unix.SIGKILL)
		}
	}()
	return true
}

func stopSignal(spec agent.Spec) (unix.Signal, error) {
	name := spec.StopSignal
	if name == "" {
		name = spec.Image.StopSignal
	}
	if name == "" {
		return unix.SIGTERM, nil
	}
	return parseSignal(name)
}

// processSpec resolves user, environment and working directory of a process
// in the service's context: overrides in user, dir and extraEnv apply on
// top of spec's.
func processSpec(spec agent.Spec, extraEnv []string, user, dir string, argv []string) (procSpec, error) {
	if len(argv) == 0 {
		return procSpec{}, fmt.Errorf("%w: empty command", agent.ErrInvalid)
	}
	if user == "" {
		user = spec.User
	}
	if user == "" {
		user = spec.Image.User
	}
	u, err := lookupUser(user, spec.GroupAdd)
	if err != nil {
		return procSpec{}, fmt.Errorf("%w: %v", agent.ErrInvalid, err)
	}
	if dir == "" {
		dir = spec.WorkingDir
	}
	if dir == "" {
		dir = spec.Image.WorkingDir
	}
	if dir == "" {
		dir = "/"
	}
	if !filepath.IsAbs(dir) {
		return procSpec{}, fmt.Errorf("%w: working directory %q is not absolute", agent.ErrInvalid, dir)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return procSpec{}, fmt.Errorf("%w: working directory: %v", agent.ErrInvalid, err)
	}
	host, _ := os.Hostname()
	env := resolve.Env([]string{"HOSTNAME=" + host}, spec.Image.Env, spec.Env, extraEnv)
	if _, ok := resolve.Lookup(env, "HOME"); !ok {
		env = append(env, "HOME="+u.Home)
	}
	return procSpec{argv: argv, env: env, dir: dir, user: u, ulimits: spec.Ulimits}, nil
}

// lookupUser resolves a user spec and extra groups against the guest's
// /etc/passwd and /etc/group.
func lookupUser(spec string, groupAdd []string) (resolve.User, error) {
	passwd, _ := os.ReadFile("/etc/passwd")
	group, _ := os.ReadFile("/etc/group")
	reader := func(b []byte) io.Reader {
		if b == nil {
			return nil
		}
		return bytes.NewReader(b)
	}
	u, err := resolve.LookupUser(spec, reader(passwd), reader(group))
	if err != nil {
		return u, err
	}
	extra, err := resolve.LookupGroups(groupAdd, reader(group))
	if err != nil {
		return u, err
	}
	u.Groups = append(u.Groups, extra...)
	return u, nil
}

// setIdentity sets the hostname and writes /etc/hostname, /etc/hosts and,
// when DNS is given, /etc/resolv.conf.
func setIdentity(spec agent.Spec) error {
	host := spec.Hostname
	if host == "" {
		host = "localhost"
	}
	if err := unix.Sethostname([]byte(host)); err != nil {
		return fmt.Errorf("%w: hostname %q: %v", agent.ErrInvalid, host, err)
	}
	if spec.Domainname != "" {
		if err := unix.Setdomainname([]byte(spec.Domainname)); err != nil {
			return fmt.Errorf("%w: domainname %q: %v", agent.ErrInvalid, spec.Domainname, err)
		}
	}
	if err := writeEtc("hostname", host+"\n"); err != nil {
		return err
	}
	var hosts strings.Builder
	hosts.WriteString("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
	named := false
	for _, h := range spec.Hosts {
		fmt.Fprintf(&hosts, "%s\t%s\n", h.IP, strings.Join(h.Names, " "))
		for _, n := range h.Names {
			named = named || n == host
		}
	}
	if !named && host != "localhost" {
		fqdn := host
		if spec.Domainname != "" {
			fqdn = host + "." + spec.Domainname + " " + host
		}
		fmt.Fprintf(&hosts, "127.0.1.1\t%s\n", fqdn)
	}
	if err := writeEtc("hosts", hosts.String()); err != nil {
		return err
	}
	if len(spec.DNS)+len(spec.DNSSearch)+len(spec.DNSOptions) == 0 {
		return nil
	}
	var rc strings.Builder
	for _, ns := range spec.DNS {
		fmt.Fprintf(&rc, "nameserver %s\n", ns)
	}
	if len(spec.DNSSearch) > 0 {
		fmt.Fprintf(&rc, "search %s\n", strings.Join(spec.DNSSearch, " "))
	}
	if len(spec.DNSOptions) > 0 {
		fmt.Fprintf(&rc, "options %s\n", strings.Join(spec.DNSOptions, " "))
	}
	return writeEtc("resolv.conf", rc.String())
}

// writeEtc replaces /etc/name, also when the image has a symlink there.
func writeEtc(name, content string) error {
	if err := os.MkdirAll("/etc", 0o755); err != nil {
		return err
	}
	path := filepath.Join("/etc", name)
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink != 0 {
		os.Remove(path)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// setSysctls writes each key to /proc/sys, in sorted order.
func setSysctls(sysctls map[string]string) error {
	keys := make([]string, 0, len(sysctls))
	for k := range sysctls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.Contains(k, "..") || strings.HasPrefix(k, "/") {
			return fmt.Errorf("%w: sysctl %q", agent.ErrInvalid, k)
		}
		path := filepath.Join("/proc/sys", strings.ReplaceAll(k, ".", "/"))
		if err := os.WriteFile(path, []byte(sysctls[k]), 0o644); err != nil {
			return fmt.Errorf("%w: sysctl %s=%s: %v", agent.ErrInvalid, k, sysctls[k], err)
		}
	}
	return nil
}
