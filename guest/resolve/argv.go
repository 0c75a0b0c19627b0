package resolve

import "errors"

// ErrNoCommand: neither the image nor compose gives a command.
var ErrNoCommand = errors.New("no command: the image has no Entrypoint or Cmd and compose sets neither `entrypoint` nor `command`")

// Argv returns the service's argv as docker does it (the daemon's merge of
// the container config into the image config):
//
//   - compose `entrypoint` non-empty: it replaces the image's Entrypoint and
//     the image's Cmd is dropped; compose `command` (if any) follows it.
//   - compose `entrypoint` set to empty ("" or []): no entrypoint at all;
//     compose `command` if set, else the image's Cmd.
//   - compose `entrypoint` not set (nil): the image's Entrypoint, followed by
//     compose `command` if set and non-empty, else the image's Cmd.
//
// A nil slice means "not set"; a non-nil empty one means "set to empty".
func Argv(imageEntrypoint, imageCmd, entrypoint, command []string) ([]string, error) {
	ep, cmd := entrypoint, command
	if len(ep) == 0 {
		if len(cmd) == 0 {
			cmd = imageCmd
		}
		if ep == nil {
			ep = imageEntrypoint
		}
	}
	argv := append(append([]string{}, ep...), cmd...)
	if len(argv) == 0 {
		return nil, ErrNoCommand
	}
	return argv, nil
}
