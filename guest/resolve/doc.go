// Package resolve turns an image config and compose's overrides into the
// process to run: argv (docker's entrypoint/command rules), environment, and
// the user from the guest's /etc/passwd and /etc/group.
//
// It is pure (readers in, values out) so the rules are tested without a VM.
// It must not import other vmcompose packages except guest/agent; the guest
// uses it, and the host may.
package resolve
