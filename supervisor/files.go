package supervisor

import (
	"context"
	"fmt"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/project"
	"github.com/vmcompose/vmcompose/reconcile"
)

// The contents of secrets and configs never leave the supervisor's
// memory but for the guest: an instance's record (state.json) holds its
// files without them, and the instance holds them while the supervisor
// runs. A supervisor that adopted a VM reads them again from the project
// when the VM boots again: from the project the last request loaded
// (every request loads it), waiting for one when none came yet.

// contentDigests are the keyed digests of the project's secrets and
// configs, for planner.Desired.Contents and the instances' fields.
func (s *Supervisor) contentDigests(p *project.Project) (map[string]string, error) {
	if s.Runtime == nil || s.Runtime.Store == nil {
		return nil, nil
	}
	return reconcile.StoreContentDigests(p, s.Runtime.Store.Dir())
}

// withoutContent copies files without their contents, for the record.
func withoutContent(files []agent.File) []agent.File {
	if files == nil {
		return nil
	}
	out := make([]agent.File, len(files))
	for i, f := range files {
		f.Content = nil
		out[i] = f
	}
	return out
}

// loaded remembers the project a request loaded.
func (s *Supervisor) loaded(p *project.Project) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.project = p
	if s.projectReady == nil {
		s.projectReady = make(chan struct{})
	}
	select {
	case <-s.projectReady:
	default:
		close(s.projectReady)
	}
}

// lastProject returns the project the last request loaded, waiting for a
// request when none came yet.
func (s *Supervisor) lastProject(ctx context.Context) (*project.Project, error) {
	s.mu.Lock()
	if s.projectReady == nil {
		s.projectReady = make(chan struct{})
	}
	ready := s.projectReady
	s.mu.Unlock()
	select {
	case <-ready:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.project, nil
}

// guestSpec is what the instance's guest starts from: its record's spec
// with the contents of its files.
func (s *Supervisor) guestSpec(ctx context.Context, in *instance) (agent.Spec, error) {
	in.mu.Lock()
	spec, files := in.rec.Guest, in.files
	in.mu.Unlock()
	if len(spec.Files) == 0 {
		return spec, nil
	}
	if files == nil {
		s.mu.Lock()
		waiting := s.project == nil
		s.mu.Unlock()
		if waiting {
			s.Log.Info("waiting for a request to read the project's secrets and configs again", "vm", in.rec.VM)
		}
		p, err := s.lastProject(ctx)
		if err != nil {
			return spec, err
		}
		svc, ok := p.AllServices()[in.rec.Service]
		if !ok {
			return spec, reconcile.Terminal(fmt.Errorf("its secrets and configs: the project has no service %q any more: run vmcompose up", in.rec.Service))
		}
		if files, err = reconcile.GuestFiles(p, svc); err != nil {
			return spec, reconcile.Terminal(err)
		}
		in.mu.Lock()
		in.files = files
		in.mu.Unlock()
	}
	spec.Files = files
	return spec, nil
}
