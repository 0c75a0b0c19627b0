package project_test

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testenv"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/project"
)

// FuzzLoadPlan feeds arbitrary compose documents through loading and
// planning (up, and down over everything running): errors are fine,
// panics are not. The seeds are the corpus's compose files.
func FuzzLoadPlan(f *testing.F) {
	root := testenv.Corpus(f)
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (filepath.Ext(path) == ".yaml" || filepath.Ext(path) == ".yml") {
			if b, err := os.ReadFile(path); err == nil {
				f.Add(b)
			}
		}
		return nil
	})
	f.Add([]byte("services: {a: {image: x, depends_on: [b], deploy: {replicas: 2}}, b: {image: y, x-vm: {vcpus: 2}}}"))
	f.Fuzz(func(t *testing.T, doc []byte) {
		// A hang is a failure the engine cannot report: turn a slow input
		// into one it records.
		timer := time.AfterFunc(10*time.Second, func() { panic(fmt.Sprintf("load and plan took over 10 s on:\n%s", doc)) })
		defer timer.Stop()
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "compose.yaml"), doc, 0o644); err != nil {
			t.Fatal(err)
		}
		p, err := project.Load(context.Background(), project.Options{WorkingDir: dir, Name: "fuzz", Env: []string{}})
		if err != nil {
			return
		}
		desired := planner.Desired{Project: p.Project}
		up, err := planner.Up(desired, planner.Observed{}, planner.Options{})
		if err != nil {
			return
		}
		_ = up.String()
		// Carried out, the plan leaves every instance it does not block
		// running its config: planning again must find nothing to do.
		var running planner.Observed
		for _, op := range up.Ops {
			if op.Kind != planner.Blocked {
				running.Instances = append(running.Instances, planner.Instance{Service: op.Service, Number: op.Number, State: planner.Running, Hash: op.Hash})
			}
		}
		again, err := planner.Up(desired, running, planner.Options{RemoveOrphans: true})
		if err != nil {
			t.Fatalf("planning up over its own result: %v", err)
		}
		want := map[string]planner.Kind{}
		for _, op := range up.Ops {
			want[op.Instance] = planner.Nothing
			if op.Kind == planner.Blocked {
				want[op.Instance] = planner.Blocked // it still cannot run
			}
		}
		if len(again.Ops) != len(up.Ops) {
			t.Fatalf("planning up over its own result: %d operations, want %d\nfirst:\n%s\nagain:\n%s", len(again.Ops), len(up.Ops), up, again)
		}
		for _, op := range again.Ops {
			if op.Kind != want[op.Instance] {
				t.Fatalf("planning up over its own result: %s %s, want %q\nfirst:\n%s\nagain:\n%s", op.Kind, op.Instance, want[op.Instance], up, again)
			}
		}
		down, err := planner.Down(desired, running, planner.DownOptions{RemoveOrphans: true})
		if err != nil {
			t.Fatalf("planning down: %v", err)
		}
		_ = down.String()
	})
}
