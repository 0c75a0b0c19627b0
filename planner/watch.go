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
		if msg := triggerProblem(t, secrets); msg != "" {
			out = append(out, fmt.Sprintf("develop.watch[%d] (path %s): %s", i, t.Path, msg))
		}
	}
	return out
}

// triggerProblem is what one rule gets wrong, or "". A rebuild builds
// the image of a service with build:; without, it pulls its image again
// (docker compose does nothing then); both recreate the service.
func triggerProblem(t types.Trigger, secrets []string) string {
	switch t.Action {
	case types.WatchActionSync, types.WatchActionSyncRestart, types.WatchActionSyncExec:
	case types.WatchActionRestart, types.WatchActionRebuild:
		return ""
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
