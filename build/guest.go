package build

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/supervisor"
)

// prelude starts every script run in the builder: b is buildah on the
// cache volume's storage, with its run root on the guest's tmpfs (locks
// and mounts of a VM that is gone must not outlive it), and short names
// resolve locally as docker's do (docker.io), since the bases are loaded
// under those names.
const prelude = `set -e
v=` + guestDir + `
b() { buildah --root ` + guestRoot + `/storage --runroot /run/vmcompose-buildah --storage-driver overlay "$@"; }
mkdir -p $v/ctx $v/df $v/bases $v/tags $v/out /etc/containers/registries.conf.d
[ -e /etc/containers/registries.conf.d/99-vmcompose.conf ] || printf '%s\n' 'unqualified-search-registries = ["docker.io"]' 'short-name-mode = "permissive"' > /etc/containers/registries.conf.d/99-vmcompose.conf
`

// stateScript prints what the cache volume holds: "ctx SERVICE TOKEN"
// for each context sent, "base DIGEST-HEX IMAGE-ID" for each base loaded
// and "tag KEY IMAGE-ID" for each name given to one.
const stateScript = prelude + `cd $v
for f in ctx/*.id; do [ -e "$f" ] && echo "ctx $(basename "$f" .id) $(cat "$f")"; done
for f in bases/*; do [ -e "$f" ] && echo "base ${f#bases/} $(cat "$f")"; done
for f in tags/*; do [ -e "$f" ] && echo "tag ${f#tags/} $(cat "$f")"; done
true
`

// guestState is what stateScript printed.
type guestState struct {
	contexts map[string]string // service → token of the context sent
	bases    map[string]string // manifest digest hex → buildah image ID
	tags     map[string]string // tag key → buildah image ID
}

func parseState(out string) *guestState {
	st := &guestState{contexts: map[string]string{}, bases: map[string]string{}, tags: map[string]string{}}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 {
			continue
		}
		switch f[0] {
		case "ctx":
			st.contexts[f[1]] = f[2]
		case "base":
			st.bases[f[1]] = f[2]
		case "tag":
			st.tags[f[1]] = f[2]
		}
	}
	return st
}

func (b *Builder) readState(ctx context.Context) (*guestState, error) {
	var out bytes.Buffer
	if err := b.run(ctx, stateScript, nil, nil, &out, nil); err != nil {
		return nil, fmt.Errorf("reading the builder's cache: %w", err)
	}
	return parseState(out.String()), nil
}

// exec runs script (with args as $1...) in the builder VM as root and
// returns its exit code. Nil writers discard; stdin nil is none.
func (b *Builder) exec(ctx context.Context, script string, args, env []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	spec := &agent.ExecSpec{Argv: append([]string{"sh", "-c", script, "sh"}, args...), User: "0:0", Env: env}
	req := &supervisor.Request{Services: []string{builderService}, Exec: spec}
	if stderr == nil {
		stderr = io.Discard
	}
	return supervisor.Exec(ctx, b.Dir, req, stdin, stdout, stderr)
}

// run is exec for scripts that must succeed; their stderr's last lines
// make the error.
func (b *Builder) run(ctx context.Context, script string, args []string, stdin io.Reader, stdout io.Writer, env []string) error {
	var stderr tail
	code, err := b.exec(ctx, script, args, env, stdin, stdout, &stderr)
	if err != nil {
		return err
	}
	if code != 0 {
		return fmt.Errorf("exit code %d: %s", code, stderr.lastLine())
	}
	return nil
}

// sync sends entries into the builder VM, relative to target.
func (b *Builder) sync(ctx context.Context, target string, entries []agent.SyncEntry) error {
	req := &supervisor.Request{Services: []string{builderService}, Sync: &agent.SyncSpec{Target: target, User: "0:0"}}
	res, err := supervisor.Sync(ctx, b.Dir, req, entries)
	if err != nil {
		return err
	}
	if len(res.Skipped) > 0 {
		s := res.Skipped[0]
		return fmt.Errorf("the builder did not take %s: %s", s.Path, s.Reason)
	}
	return nil
}

// tail keeps the last 64 KiB written to it.
type tail struct{ buf []byte }

const tailSize = 64 << 10

func (t *tail) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - tailSize; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) lastLine() string {
	lines := strings.Split(strings.TrimSpace(string(t.buf)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// lineWriter calls fn with each whole line written to it.
type lineWriter struct {
	fn  func(string)
	buf []byte
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.fn(strings.TrimRight(string(w.buf[:i]), "\r"))
		w.buf = w.buf[i+1:]
	}
	return len(p), nil
}

// Flush gives fn what is left without a newline.
func (w *lineWriter) Flush() {
	if len(w.buf) > 0 {
		w.fn(string(w.buf))
		w.buf = nil
	}
}
