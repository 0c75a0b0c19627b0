package agentd

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/guest/resolve"
)

// reaper is PID 1's child handling: it waits for every child (Wait4 on -1
// at each SIGCHLD), including orphans re-parented to PID 1, and hands the
// status of the ones it started to whoever waits for them. Nothing else in
// vminit may wait for children: os/exec's Cmd.Wait is never called.
type reaper struct {
	// mu is held from before fork until the child is registered, so a
	// child that exits at once is never taken for an orphan; starting also
	// changes vminit's own resource limits for the child to inherit.
	mu      sync.Mutex
	waiters map[int]chan unix.WaitStatus
}

func newReaper() *reaper {
	r := &reaper{waiters: map[int]chan unix.WaitStatus{}}
	ch := make(chan os.Signal, 16)
	signal.Notify(ch, unix.SIGCHLD)
	go func() {
		for {
			r.reap()
			<-ch
		}
	}()
	return r
}

func (r *reaper) reap() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
		r.mu.Lock()
		ch := r.waiters[pid]
		delete(r.waiters, pid)
		r.mu.Unlock()
		if ch != nil {
			ch <- ws
		}
	}
}

// procSpec is a process to start.
type procSpec struct {
	argv    []string
	env     []string
	dir     string
	user    resolve.User
	ulimits []agent.Ulimit
	stdin   *os.File
	stdout  *os.File
	stderr  *os.File
	// tty makes stdin the controlling terminal.
	tty bool
}

// start starts p in a new session (its pid is its process group) and
// returns a channel that receives its wait status.
func (r *reaper) start(p procSpec) (int, <-chan unix.WaitStatus, error) {
	path, err := lookPath(p.argv[0], p.env, p.dir)
	if err != nil {
		return 0, nil, err
	}
	cmd := &exec.Cmd{
		Path:   path,
		Args:   p.argv,
		Env:    p.env,
		Dir:    p.dir,
		Stdin:  p.stdin,
		Stdout: p.stdout,
		Stderr: p.stderr,
		SysProcAttr: &syscall.SysProcAttr{
			Setsid:  true,
			Setctty: p.tty,
			Credential: &syscall.Credential{
				Uid:    p.user.Uid,
				Gid:    p.user.Gid,
				Groups: p.user.Groups,
			},
		},
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	restore, err := setRlimits(p.ulimits)
	if err != nil {
		return 0, nil, err
	}
	err = cmd.Start()
	restore()
	if err != nil {
		return 0, nil, fmt.Errorf("%w: starting %s: %w", startFailure(err), p.argv[0], err)
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	ch := make(chan unix.WaitStatus, 1)
	r.waiters[pid] = ch
	return pid, ch, nil
}

// startFailure says which of docker's two failures to start a command
// err is: the file is missing (127), or it is there and cannot be run
// (126).
func startFailure(err error) error {
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ENOTDIR) {
		return agent.ErrCommandNotFound
	}
	return agent.ErrCommandNotExecutable
}

// exitStatus turns a wait status into docker's exit code convention.
func exitStatus(ws unix.WaitStatus) agent.ExitStatus {
	if ws.Signaled() {
		return agent.ExitStatus{Code: 128 + int(ws.Signal()), Signal: unix.SignalName(ws.Signal())}
	}
	return agent.ExitStatus{Code: ws.ExitStatus()}
}

// lookPath finds file in the PATH of env, as the process's own execvp
// would; a name with a slash is used as it is.
func lookPath(file string, env []string, dir string) (string, error) {
	if strings.Contains(file, "/") {
		return file, nil
	}
	path, _ := resolve.Lookup(env, "PATH")
	for _, d := range filepath.SplitList(path) {
		if d == "" {
			d = "."
		}
		p := filepath.Join(d, file)
		if !filepath.IsAbs(p) {
			p = filepath.Join(dir, p)
		}
		fi, err := os.Stat(p)
		if err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: exec: %q: executable file not found in $PATH", agent.ErrCommandNotFound, file)
}

// parseSignal accepts "SIGTERM", "TERM", "term" or a number.
func parseSignal(s string) (unix.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return unix.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("%w: unknown signal %q", agent.ErrInvalid, s)
}

var rlimits = map[string]int{
	"as":         unix.RLIMIT_AS,
	"core":       unix.RLIMIT_CORE,
	"cpu":        unix.RLIMIT_CPU,
	"data":       unix.RLIMIT_DATA,
	"fsize":      unix.RLIMIT_FSIZE,
	"locks":      unix.RLIMIT_LOCKS,
	"memlock":    unix.RLIMIT_MEMLOCK,
	"msgqueue":   unix.RLIMIT_MSGQUEUE,
	"nice":       unix.RLIMIT_NICE,
	"nofile":     unix.RLIMIT_NOFILE,
	"nproc":      unix.RLIMIT_NPROC,
	"rss":        unix.RLIMIT_RSS,
	"rtprio":     unix.RLIMIT_RTPRIO,
	"rttime":     unix.RLIMIT_RTTIME,
	"sigpending": unix.RLIMIT_SIGPENDING,
	"stack":      unix.RLIMIT_STACK,
}

// checkUlimits reports unknown names before anything starts.
func checkUlimits(ul []agent.Ulimit) error {
	for _, u := range ul {
		if _, ok := rlimits[u.Name]; !ok {
			return fmt.Errorf("%w: ulimit %q unknown", agent.ErrInvalid, u.Name)
		}
	}
	return nil
}

// setRlimits sets vminit's own limits for a child to inherit (Go cannot set
// them between fork and exec) and returns how to put them back. The caller
// holds the reaper's lock, so no other child starts meanwhile.
func setRlimits(ul []agent.Ulimit) (restore func(), err error) {
	var saved []func()
	restore = func() {
		for i := len(saved) - 1; i >= 0; i-- {
			saved[i]()
		}
	}
	for _, u := range ul {
		res, ok := rlimits[u.Name]
		if !ok {
			restore()
			return nil, fmt.Errorf("%w: ulimit %q unknown", agent.ErrInvalid, u.Name)
		}
		var old syscall.Rlimit
		if err := syscall.Getrlimit(res, &old); err != nil {
			restore()
			return nil, fmt.Errorf("ulimit %s: %w", u.Name, err)
		}
		lim := syscall.Rlimit{Cur: rlimValue(u.Soft), Max: rlimValue(u.Hard)}
		if err := syscall.Setrlimit(res, &lim); err != nil {
			restore()
			return nil, fmt.Errorf("%w: ulimit %s=%d:%d: %v", agent.ErrInvalid, u.Name, u.Soft, u.Hard, err)
		}
		saved = append(saved, func() { syscall.Setrlimit(res, &old) })
	}
	return restore, nil
}

func rlimValue(v int64) uint64 {
	if v < 0 {
		return unix.RLIM_INFINITY
	}
	return uint64(v)
}
