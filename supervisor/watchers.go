package supervisor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/planner"
)

// A watch session is a `vmcompose watch` holding POST /watch open. While it does,
// an instance of one of its services that boots (recreated, started after a
// stop, restarted by its policy, rebooted after a network loss) is prepared
// but its process is not launched until the watcher has synced its files
// into it and asked for the launch (POST /launch), or went away: the
// service never runs files older than the host's.
type watchSession struct {
	services map[string]bool
	held     chan Held // to the watcher's connection
	gone     chan struct{}
}

// Held is the event POST /watch streams: an instance waits for its files.
type Held struct {
	Instance string `json:"instance"`
	Service  string `json:"service"`
	Index    int    `json:"index"`
	// Reason is why it booted: "created", "started" or "restarted".
	Reason string `json:"reason"`
}

// holdTimeout bounds the wait for a watcher that neither syncs nor goes
// away (a CLI stopped with SIGSTOP): the service starts with what it has.
const holdTimeout = 2 * time.Minute

// attachWatch registers a watch session for Request.Services until its connection
// closes, streaming a Held for each instance that waits for it.
func (s *Supervisor) attachWatch(w http.ResponseWriter, r *http.Request) {
	var req Request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Services) == 0 {
		http.Error(w, "watch: want the watched services", http.StatusBadRequest)
		return
	}
	wt := &watchSession{services: map[string]bool{}, held: make(chan Held, 16), gone: make(chan struct{})}
	for _, name := range req.Services {
		wt.services[name] = true
	}
	s.mu.Lock()
	s.sessions[wt] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sessions, wt)
		s.mu.Unlock()
		close(wt.gone)
	}()
	s.Log.Info("watcher attached", "services", req.Services)
	w.Header().Set("Content-Type", "application/x-ndjson")
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	// The first line says the registration holds: a boot from now on waits.
	enc.Encode(Held{})
	rc.Flush()
	for {
		select {
		case h := <-wt.held:
			if enc.Encode(h) != nil || rc.Flush() != nil {
				return
			}
		case <-r.Context().Done():
			s.Log.Info("watcher detached", "services", req.Services)
			return
		case <-s.ctx.Done():
			return
		}
	}
}

// sessionOf is a watch session of service, or nil.
func (s *Supervisor) sessionOf(service string) *watchSession {
	s.mu.Lock()
	defer s.mu.Unlock()
	for wt := range s.sessions {
		if wt.services[service] {
			return wt
		}
	}
	return nil
}

// startService starts an instance's service in a guest that booted. With
// a watcher of the service attached, the guest is prepared first and the
// process launched once the watcher synced (launch) or went away.
func (s *Supervisor) startService(ctx context.Context, in *instance, client *agent.Client, spec agent.Spec, reason string) error {
	wt := s.sessionOf(in.rec.Service)
	if wt == nil {
		return client.Start(ctx, spec)
	}
	if err := client.Prepare(ctx, spec); err != nil {
		return err
	}
	launch := make(chan struct{})
	in.mu.Lock()
	in.client, in.launch = client, launch
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		in.launch = nil
		in.mu.Unlock()
	}()
	_, index, _ := planner.ParseInstance(in.rec.VM)
	h := Held{Instance: in.rec.VM, Service: in.rec.Service, Index: index, Reason: reason}
	select {
	case wt.held <- h:
	case <-wt.gone:
	}
	select {
	case <-launch:
	case <-wt.gone:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.After(holdTimeout):
		s.Log.Warn("the watcher did not sync in time: launching", "vm", in.rec.VM, "waited", holdTimeout)
	}
	return client.Launch(ctx)
}

// launchHeld ends an instance's wait for its watcher (Request.Services,
// Index) and answers once its process runs, or with why it does not.
func (s *Supervisor) launchHeld(w http.ResponseWriter, r *http.Request) {
	var req Request
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Services) != 1 {
		http.Error(w, "launch: want one service", http.StatusBadRequest)
		return
	}
	name := planner.InstanceName(req.Services[0], max(req.Index, 1))
	in := s.lookup(name)
	if in == nil {
		http.Error(w, fmt.Sprintf("launch: no instance %s", name), http.StatusNotFound)
		return
	}
	in.mu.Lock()
	launch := in.launch
	in.launch = nil
	in.mu.Unlock()
	if launch == nil {
		http.Error(w, fmt.Sprintf("launch: %s does not wait for its files", name), http.StatusConflict)
		return
	}
	close(launch)
	if err := in.await(r.Context(), condStarted); err != nil {
		http.Error(w, err.Error(), http.StatusConflict)
	}
}

// Watch attaches a watcher of services to the supervisor of the project
// whose state dir is dir and calls held for each instance that booted and
// waits for its files (sync them, then Launch it). ready is called once
// the registration holds. It returns when ctx ends or the supervisor goes
// away (the caller may attach again).
func Watch(ctx context.Context, dir string, services []string, ready func(), held func(Held)) error {
	conn, br, err := hijacked(ctx, dir, "/watch", &Request{Services: services})
	if err != nil {
		return err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	dec := json.NewDecoder(br)
	for first := true; ; first = false {
		var h Held
		if err := dec.Decode(&h); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, io.EOF) {
				return errors.New("watch: the supervisor went away")
			}
			return fmt.Errorf("watch: %w", err)
		}
		if first {
			ready()
			continue
		}
		held(h)
	}
}

// Launch starts the process of an instance that waited for its files
// (Request.Services, Index), once they were synced.
func Launch(ctx context.Context, dir string, req *Request) error {
	conn, _, err := hijacked(ctx, dir, "/launch", req)
	if err != nil {
		return err
	}
	return conn.Close()
}
