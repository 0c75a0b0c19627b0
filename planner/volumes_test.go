package planner_test

import (
	"slices"
	"testing"

	"github.com/vmcompose/vmcompose/planner"
)

// TestSharedVolumesGolden: a named volume that more than one VM writes is
// a shared directory (sharing: auto), always one with sharing: shared,
// never with sharing: disk; once shared it stays so; the VM that had it
// as a disk is recreated, and the plan says why.
func TestSharedVolumesGolden(t *testing.T) {
	const two = `
services:
  web: {image: web, volumes: [uploads:/u]}
  worker: {image: worker, volumes: [uploads:/u]}
  reader: {image: reader, volumes: [uploads:/u:ro]}
volumes: {uploads: {}}
`
	const one = `
services:
  worker: {image: worker, volumes: [uploads:/u]}
volumes: {uploads: {}}
`
	tests := []struct {
		name     string
		yaml     string
		onHost   []string // shared on the host already
		observed string   // compose file whose services run as disks, with their current fields
		opts     planner.Options
		want     string
		shared   map[string][]string // instance -> Op.Shared
	}{{
		name: "two writers and a reader share one directory",
		yaml: two,
		want: `project demo (up): 3 operations in 1 wave: 3 create
wave 1
  1  create  reader-1  new service
  2  create  web-1     new service
  3  create  worker-1  new service
volumes
  "uploads" becomes shared by reader, web and worker: a directory on the host
`,
		shared: map[string][]string{"web-1": {"uploads"}, "reader-1": {"uploads"}},
	}, {
		name: "one writer and a reader share it: QEMU gives a written disk image to one VM",
		yaml: `services: {web: {image: web, volumes: [uploads:/u]}, reader: {image: reader, volumes: [uploads:/u:ro]}}
volumes: {uploads: {}}`,
		want: `project demo (up): 2 operations in 1 wave: 2 create
wave 1
  1  create  reader-1  new service
  2  create  web-1     new service
volumes
  "uploads" becomes shared by reader and web: a directory on the host
`,
		shared: map[string][]string{"web-1": {"uploads"}, "reader-1": {"uploads"}},
	}, {
		name: "readers alone keep the disk image",
		yaml: `services: {a: {image: a, volumes: [uploads:/u:ro]}, b: {image: b, volumes: [uploads:/u:ro]}}
volumes: {uploads: {}}`,
		want: `project demo (up): 2 operations in 1 wave: 2 create
wave 1
  1  create  a-1  new service
  2  create  b-1  new service
`,
		shared: map[string][]string{"a-1": nil, "b-1": nil},
	}, {
		name: "sharing: shared with one writer",
		yaml: `services: {web: {image: web, volumes: [uploads:/u]}}
volumes: {uploads: {driver_opts: {sharing: shared}}}`,
		want: `project demo (up): 1 operation in 1 wave: 1 create
wave 1
  1  create  web-1  new service
volumes
  "uploads" becomes shared by web: a directory on the host
`,
		shared: map[string][]string{"web-1": {"uploads"}},
	}, {
		name: "--scale worker=3 shares it between the replicas",
		yaml: `services: {worker: {image: worker, volumes: [uploads:/u]}}
volumes: {uploads: {}}`,
		opts:   planner.Options{Scale: map[string]int{"worker": 3}},
		shared: map[string][]string{"worker-1": {"uploads"}, "worker-3": {"uploads"}},
		want: `project demo (up): 3 operations in 1 wave: 3 create
wave 1
  1  create  worker-1  new service
  2  create  worker-2  new replica (scale 3)
  3  create  worker-3  new replica (scale 3)
volumes
  "uploads" becomes shared by worker: a directory on the host
`,
	}, {
		name: "sharing: disk refuses the second writer, and says so",
		yaml: `services: {a: {image: a, volumes: [data:/d]}, b: {image: b, volumes: [data:/d]}}
volumes: {data: {driver_opts: {sharing: disk}}}`,
		want: `project demo (up): 2 operations in 1 wave: 1 create, 1 blocked
wave 1
  1  create   a-1  new service
  2  blocked  b-1  volumes: "data" is mounted read-write by services "a" and "b", but it has sharing: disk: a disk image that a VM writes is that VM's alone (ext4 is not a cluster file system): mount it in one of them only, or set sharing: auto (a directory all of them share)
`,
	}, {
		name: "an external disk volume stays one",
		yaml: `services: {a: {image: a, volumes: [data:/d]}}
volumes: {data: {external: true}}`,
		opts: planner.Options{Scale: map[string]int{"a": 2}},
		want: `project demo (up): 2 operations in 1 wave: 2 blocked
wave 1
  1  blocked  a-1  volumes: "data" is mounted read-write by its 2 replicas, but it is an external disk volume: a disk image that a VM writes is that VM's alone (ext4 is not a cluster file system): run one replica, or use a shared volume (` + "`vmcompose volume create --opt sharing=shared`" + `)
  2  blocked  a-2  volumes: "data" is mounted read-write by its 2 replicas, but it is an external disk volume: a disk image that a VM writes is that VM's alone (ext4 is not a cluster file system): run one replica, or use a shared volume (` + "`vmcompose volume create --opt sharing=shared`" + `)
`,
	}, {
		name: "a sharing option that means nothing",
		yaml: `services: {a: {image: a, volumes: [data:/d]}}
volumes: {data: {driver_opts: {sharing: cluster}}}`,
		want: `project demo (up): 1 operation in 1 wave: 1 blocked
wave 1
  1  blocked  a-1  volumes: "data": driver_opts.sharing: "cluster" is not a sharing mode: use auto, shared or disk
`,
	}, {
		name: "a driver option the volume store has not: plan blocks what up would refuse",
		yaml: `services: {a: {image: a, volumes: [data:/d]}}
volumes: {data: {driver_opts: {type: none, o: bind, device: /srv}}}`,
		want: `project demo (up): 1 operation in 1 wave: 1 blocked
wave 1
  1  blocked  a-1  volumes: "data": driver_opts.device is not supported: the options are size and sharing
`,
	}, {
		name: "a directory stays one with a single writer left",
		yaml: `services: {web: {image: web, volumes: [uploads:/u]}}
volumes: {uploads: {}}`,
		onHost: []string{"uploads"},
		want: `project demo (up): 1 operation in 1 wave: 1 create
wave 1
  1  create  web-1  new service
`,
		shared: map[string][]string{"web-1": {"uploads"}},
	}, {
		name: "sharing: disk on a directory is refused",
		yaml: `services: {web: {image: web, volumes: [uploads:/u]}}
volumes: {uploads: {driver_opts: {sharing: disk}}}`,
		onHost: []string{"uploads"},
		want: `project demo (up): 1 operation in 1 wave: 1 blocked
wave 1
  1  blocked  web-1  volumes: "uploads" has sharing: disk, but it is a shared directory on the host already: set sharing: auto, or remove the volume with ` + "`vmcompose down -v`" + ` to start again with a disk image
`,
	}, {
		name: "one writer then two: the disk's VM is recreated, its data moves",
		yaml: `services: {web: {image: web, volumes: [uploads:/u]}, worker: {image: worker, volumes: [uploads:/u]}}
volumes: {uploads: {}}`,
		observed: `services: {web: {image: web, volumes: [uploads:/u]}}
volumes: {uploads: {}}`,
		want: `project demo (up): 2 operations in 1 wave: 1 create, 1 recreate
wave 1
  1  recreate  web-1     volumes: "uploads" becomes shared
  2  create    worker-1  new service
volumes
  "uploads" becomes shared by web and worker: a directory on the host (web-1 has it as a disk: its data moves into the directory once it is removed)
`,
		shared: map[string][]string{"web-1": {"uploads"}, "worker-1": {"uploads"}},
	}, {
		name:     "a worker scaled from 1 to 2",
		yaml:     one,
		observed: one,
		opts:     planner.Options{Scale: map[string]int{"worker": 2}},
		want: `project demo (up): 2 operations in 1 wave: 1 create, 1 recreate
wave 1
  1  recreate  worker-1  volumes: "uploads" becomes shared
  2  create    worker-2  new replica (scale 2)
volumes
  "uploads" becomes shared by worker: a directory on the host (worker-1 has it as a disk: its data moves into the directory once it is removed)
`,
	}, {
		name: "a VM that is not in this up keeps its disk: refused",
		yaml: `services: {web: {image: web, volumes: [uploads:/u]}, worker: {image: worker, volumes: [uploads:/u]}}
volumes: {uploads: {}}`,
		observed: `services: {web: {image: web, volumes: [uploads:/u]}}
volumes: {uploads: {}}`,
		opts: planner.Options{Services: []string{"worker"}},
		want: `project demo (up): 1 operation in 1 wave: 1 blocked
wave 1
  1  blocked  worker-1  volumes: "uploads" becomes shared (a directory every VM that mounts it shares), but web-1 keeps it as a disk image: include web in the up, without --no-recreate
volumes
  "uploads" becomes shared by web and worker: a directory on the host
`,
	}, {
		name: "--no-recreate cannot keep a disk that becomes shared",
		yaml: two,
		observed: `services: {web: {image: web, volumes: [uploads:/u]}}
volumes: {uploads: {}}`,
		opts: planner.Options{NoRecreate: true},
		want: `project demo (up): 3 operations in 1 wave: 3 blocked
wave 1
  1  blocked  reader-1  volumes: "uploads" becomes shared (a directory every VM that mounts it shares), but web-1 keeps it as a disk image: include web in the up, without --no-recreate
  2  blocked  web-1     volumes: "uploads" becomes shared (a directory every VM that mounts it shares), but web-1 keeps it as a disk image: include web in the up, without --no-recreate
  3  blocked  worker-1  volumes: "uploads" becomes shared (a directory every VM that mounts it shares), but web-1 keeps it as a disk image: include web in the up, without --no-recreate
volumes
  "uploads" becomes shared by reader, web and worker: a directory on the host
`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var observed planner.Observed
			if tt.observed != "" {
				observed = running(t, load(t, tt.observed))
			}
			desired := planner.Desired{Project: load(t, tt.yaml), SharedVolumes: map[string]bool{}}
			for _, v := range tt.onHost {
				desired.SharedVolumes[v] = true
			}
			plan, err := planner.Up(desired, observed, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := plan.String(); got != tt.want {
				t.Errorf("plan:\n%s\nwant:\n%s", got, tt.want)
			}
			for _, op := range plan.Ops {
				if want, ok := tt.shared[op.Instance]; ok && !slices.Equal(op.Shared, want) {
					t.Errorf("%s: shared volumes %v, want %v", op.Instance, op.Shared, want)
				}
			}
			// Carrying the plan out and planning again finds nothing to do:
			// the hash of a created VM is the one planned.
			if plan.Blocked() != nil {
				return
			}
			var after planner.Observed
			for _, op := range plan.Ops {
				f, _ := planner.InstanceFields(desired.Project.Services[op.Service], "", nil, op.Shared)
				if f.Hash() != op.Hash {
					t.Errorf("%s: the fields of Op.Shared hash to %s, the plan has %s", op.Instance, f.Hash(), op.Hash)
				}
				after.Instances = append(after.Instances, planner.Instance{Service: op.Service, Number: op.Number, State: planner.Running, Hash: op.Hash, Fields: f})
			}
			for _, sh := range plan.Shares {
				desired.SharedVolumes[sh.Volume] = true
			}
			again, err := planner.Up(desired, after, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			if again.Changes() != 0 || len(again.Shares) != 0 {
				t.Errorf("planning again:\n%s", again)
			}
		})
	}
}
