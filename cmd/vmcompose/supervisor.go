package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vmcompose/vmcompose/internal/flock"
	"github.com/vmcompose/vmcompose/network/netproc"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/reconcile"
	"github.com/vmcompose/vmcompose/supervisor"
)

// superviseCommand is the hidden command the CLI starts, detached, as a
// project's supervisor.
func superviseCommand() *cli.Command {
	return &cli.Command{
		Name:   "supervise",
		Usage:  "run the supervisor of a project (started by the other commands)",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "state-dir", Required: true, Usage: "the project's state `DIR`"},
		},
		Action: runSupervise,
	}
}

func runSupervise(c *cli.Context) error {
	dir := c.String("state-dir")
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	sup := supervisor.NewSupervisor(dir, log)
	sup.IdleExit = 10 * time.Minute
	sup.Version = programVersion()
	rt, err := supervisorRuntime(dir, sup, log)
	if err != nil {
		return err
	}
	sup.Runtime = rt
	// The network runs in a process of its own that outlives this one,
	// so that a new supervisor adopts networked VMs as they run.
	nets := projectNetworks(dir, log)
	defer nets.Close() // asks it to exit only when nothing is attached
	sup.Network, sup.NetworkReattach, sup.NetworkDetach = nets.Attach, nets.Reattach, nets.Detach
	sup.NetworkAttached, sup.NetworkRelease, sup.NetworkWatch = nets.Attached, nets.Release, nets.Watch
	// Detached from any terminal; SIGTERM (and SIGINT) end the supervisor,
	// never the VMs: a new supervisor adopts them. The signal-aware
	// context of main does that.
	signal.Ignore(syscall.SIGHUP)
	err = sup.Run(c.Context)
	if errors.Is(err, supervisor.ErrSupervisorRunning) {
		log.Info("another supervisor runs; exiting")
		return nil
	}
	return err
}

// supervisorClient is the CLI's end of the connection to a project's supervisor.
type supervisorClient struct {
	dir  string
	http *http.Client
}

func newSupervisorClient(dir string) *supervisorClient {
	return &supervisorClient{dir: dir, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return supervisor.DialSupervisor(ctx, dir)
		},
		DisableKeepAlives: true,
	}}}
}

func (s *supervisorClient) ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://supervisor/ping", nil)
	resp, err := s.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var p supervisor.Ping
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		return fmt.Errorf("supervisor ping: %w", err)
	}
	if p.Version != programVersion() {
		return errOtherVersion
	}
	return nil
}

// errOtherVersion: the supervisor runs another build of vmcompose.
var errOtherVersion = errors.New("the supervisor runs another version of vmcompose")

// programVersion identifies this build: the version, and the executable's
// size and time, so that a rebuilt binary (same version string) counts as
// another version.
func programVersion() string {
	v := versionString()
	if exe, err := os.Executable(); err == nil {
		if fi, err := os.Stat(exe); err == nil {
			v += fmt.Sprintf(" %s %d %d", exe, fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return v
}

// replace asks a supervisor of another version to exit once its current
// operation is done, and waits for its socket to go. The new one adopts
// the VMs.
func (s *supervisorClient) replace(ctx context.Context) error {
	if err := s.call(ctx, "/quit", &supervisor.Request{}, nil); err != nil {
		return fmt.Errorf("replacing the supervisor of another version: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(supervisor.SocketPath(s.dir)); err != nil {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("replacing the supervisor of another version: it did not exit within 30s")
}

// connect returns the project's supervisor, starting it when none runs
// and start is set. Starting is serialised by a lock in the state dir, so
// two commands never start two supervisors (and the supervisor's own lock
// would make the second exit anyway).
func connect(ctx context.Context, dir string, start bool) (*supervisorClient, error) {
	s := newSupervisorClient(dir)
	err := s.ping(ctx)
	if err == nil {
		return s, nil
	}
	if errors.Is(err, errOtherVersion) {
		if err := s.replace(ctx); err != nil {
			return nil, err
		}
	}
	if !start {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	unlock, err := flock.Lock(ctx, filepath.Join(dir, "start.lock"), false)
	if err != nil {
		return nil, fmt.Errorf("starting the supervisor: %w", err)
	}
	defer unlock()
	if s.ping(ctx) == nil {
		return s, nil
	}
	_, err = startDetached(ctx, "the supervisor", filepath.Join(dir, "supervisor.log"),
		[]string{"supervise", "--state-dir", dir}, s.ping)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// startDetached starts this program with args as a daemon of the project:
// in a session of its own (no terminal, no signal from the CLI's), in /,
// writing to logPath (kept under 4 MiB plus one older file). It returns
// once ready answers, with the process it started, whose exit status this
// process, its parent, learns; or with the end of the log when the process
// exits first.
func startDetached(ctx context.Context, what, logPath string, args []string, ready func(context.Context) error) (*netproc.Child, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", what, err)
	}
	if fi, err := os.Stat(logPath); err == nil && fi.Size() > 4<<20 {
		os.Rename(logPath, logPath+".1") // keep one older log
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", what, err)
	}
	defer logf.Close()
	cmd := exec.Command(exe, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", what, err)
	}
	exited := make(chan struct{})
	status := make(chan error, 1)
	go func() {
		status <- cmd.Wait()
		close(exited)
	}()
	child := &netproc.Child{Pid: cmd.Process.Pid, Exited: status}
	deadline := time.After(30 * time.Second)
	for {
		if ready(ctx) == nil {
			return child, nil
		}
		select {
		case <-exited:
			if ready(ctx) == nil { // another one answers
				return nil, nil
			}
			return nil, fmt.Errorf("%s exited at start: %s (log: %s)", what, lastLines(logPath, 3), logPath)
		case <-deadline:
			return nil, fmt.Errorf("%s did not answer within 30s (log: %s)", what, logPath)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func lastLines(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "; ")
}

// serviceFailure is an operation's error as the supervisor answered it:
// its message, the service at fault (if any) and the sentinel it wraps.
type serviceFailure struct {
	service string
	err     error
}

func (e *serviceFailure) Error() string { return e.err.Error() }
func (e *serviceFailure) Unwrap() error { return e.err }

// call sends a request and hands each progress event to onEvent until the
// last one, whose error it returns.
func (s *supervisorClient) call(ctx context.Context, path string, req *supervisor.Request, onEvent func(supervisor.Event)) error {
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	hreq, err := http.NewRequestWithContext(ctx, "POST", "http://supervisor"+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp, err := s.http.Do(hreq)
	if err != nil {
		return fmt.Errorf("talking to the supervisor: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return errors.New(strings.TrimSpace(string(b)))
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var e supervisor.Event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			return fmt.Errorf("supervisor answer: %w", err)
		}
		if e.Done {
			if err := e.Err(); err != nil {
				return &serviceFailure{service: e.Service, err: err}
			}
			return nil
		}
		if onEvent != nil {
			onEvent(e)
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("supervisor answer: %w", err)
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return errors.New("the supervisor ended the answer early (see supervisor.log in the state directory)")
}

// request is a supervisor request carrying the project's load options,
// made absolute so that the supervisor, in another directory, loads the
// same project with the same environment.
func request(c *cli.Context) (*supervisor.Request, error) {
	o := loadOptions(c)
	wd, err := os.Getwd()
	if err != nil {
		return nil, err
	}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) || p == "-" {
			return p
		}
		return filepath.Join(wd, p)
	}
	for i := range o.Files {
		o.Files[i] = abs(o.Files[i])
	}
	for i := range o.EnvFiles {
		o.EnvFiles[i] = abs(o.EnvFiles[i])
	}
	o.ProjectDir = abs(o.ProjectDir)
	o.WorkingDir = wd
	o.Env = os.Environ()
	return &supervisor.Request{Load: o, Timeout: -1}, nil
}

// projectState loads the project and returns it with its state dir.
func projectState(c *cli.Context) (*project.Project, string, error) {
	p, err := loadProject(c)
	if err != nil {
		return nil, "", err
	}
	dir, err := reconcile.StateDir(p.Name)
	if err != nil {
		return nil, "", err
	}
	return p, dir, nil
}

// observe reads what exists of the project from the CLI: the state record
// checked against the VM driver.
func observe(ctx context.Context, dir string) (reconcile.Observation, error) {
	d, err := localDriver(dir)
	if err != nil || d == nil {
		return reconcile.Observation{}, err
	}
	return reconcile.ObserveVMs(ctx, dir, d)
}

// printEvent shows an operation's progress on stderr, as compose does.
func printEvent(c *cli.Context) func(supervisor.Event) {
	if c.String("progress") == "quiet" {
		return nil
	}
	w := c.App.ErrWriter
	if w == nil {
		w = os.Stderr
	}
	return func(e supervisor.Event) {
		if e.Instance == "" {
			fmt.Fprintln(w, e.Message)
			return
		}
		fmt.Fprintf(w, " %-20s %s\n", e.Instance, e.Message)
	}
}
