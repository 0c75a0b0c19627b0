package planner

import (
	"fmt"
	"path"

	"github.com/compose-spec/compose-go/v2/types"
)

// WatchProblems is why `vmcompose watch` (and `up --watch`) would refuse a
// service's develop.watch rules, as far as the compose file tells; the
// host's part (a path that does not exist) is project.Project's
// WatchProblems. They do not block up, which ignores develop: as docker
// compose's does; config warns of them.
func WatchProblems(svc types.ServiceConfig) []string {
	if svc.Develop == nil {
		return nil
	}
	var out []string
	secrets := SecretPaths(svc)
	for i, t := range svc.Develop.Watch {
		if msg := triggerProblem(t, secrets, svc.Build != nil); msg != "" {
			out = append(out, fmt.Sprintf("develop.watch[%d] (path %s): %s", i, t.Path, msg))
		}
	}
	return out
}

// triggerProblem is what one rule gets wrong, or "".
// A rebuild of a service without build: pulls its image again and
// recreates it (docker compose does nothing then); one with build: would
// need the build vmcompose does not have.
func triggerProblem(t types.Trigger, secrets []string, build bool) string {
	switch t.Action {
	case types.WatchActionSync, types.WatchActionSyncRestart, types.WatchActionSyncExec:
	case types.WatchActionRestart:
		return ""
	case types.WatchActionRebuild:
		if !build {
			return ""
		}
		return "action: rebuild builds the image, which vmcompose does not support yet: push the image and drop build: (rebuild then pulls it again), or sync the files with action: sync+restart"
	default:
		return fmt.Sprintf("action: %q is not a watch action: use sync, sync+restart, sync+exec, restart or rebuild", t.Action)
	}
	switch {
	case t.Target == "":
		return fmt.Sprintf("action: %s needs a target: set target: to the directory in the VM the files go to, e.g. /app", t.Action)
	case !path.IsAbs(t.Target):
		return fmt.Sprintf("target: %q is not an absolute path: write where the files go in the VM from /, e.g. %s", t.Target, path.Join("/", t.Target))
	case t.Action == types.WatchActionSyncExec && len(t.Exec.Command) == 0:
		return "action: sync+exec needs exec.command: give the command to run in the VM after each sync, or use action: sync"
	}
	target := path.Clean(t.Target)
	for _, s := range secrets {
		if target == s || len(target) > len(s) && target[:len(s)+1] == s+"/" {
			return fmt.Sprintf("target: %q is at or under %s, where the service's secrets are (read-only): sync to another directory", t.Target, s)
		}
	}
	return ""
}
