package watch

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// watchesError says that inotify has no watch left for dir, and how to
// raise the limit: the default (8 192 before Linux 5.11) is soon used up by
// a tree with node_modules, and every directory takes one watch.
func watchesError(dir string) error {
	return limitError("fs.inotify.max_user_watches", fmt.Sprintf("watching %s: no inotify watch is left, one is needed per directory", dir),
		fmt.Sprintf("changes under %s and the directories after it are not seen until then; the rest is watched", dir))
}

// instancesError explains a failed inotify_init: too many inotify
// instances for this user.
func instancesError(err error) error {
	if !errors.Is(err, syscall.EMFILE) {
		return fmt.Errorf("starting inotify: %w", err)
	}
	return limitError("fs.inotify.max_user_instances", "starting inotify: this user has no inotify instance left", "nothing is watched")
}

func limitError(sysctl, what, then string) error {
	n := sysctlInt(sysctl)
	return fmt.Errorf("%s (%s = %d): raise it with `sysctl %s=%d` as root (a file in /etc/sysctl.d/ keeps it across boots); %s",
		what, sysctl, n, sysctl, max(2*n, 524288), then)
}

func sysctlInt(name string) int {
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
	if err != nil {
		return 0
	}
	n, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return n
}
