package main_test

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

// TestSecretsAndConfigs: secrets from a file and from the environment,
// short and long syntax, and configs from content: and from a file
// appear in the VM with their owners and modes, secrets on a read-only
// tmpfs, before the service starts, on a read_only root; a restart of
// the VM by its restart policy, one after the supervisor itself was
// killed, and `run` deliver them again. Their values show nowhere else:
// not in any output, the state dir (state.json, logs, VM dirs, disk
// images), nor a process's arguments. A changed secret file recreates the
// service, and plan names the secret.
func TestSecretsAndConfigs(t *testing.T) {
	p := newRunProject(t)
	ref := p.push("busybox", testimage.Busybox(t))
	dir := filepath.Join(p.home, "sec")
	state := filepath.Join(p.home, "state", "vmcompose", "sec")
	p.cleanup(dir)
	pw, token, key := "pw-"+randomValue(t), "token-"+randomValue(t), "key-"+randomValue(t)
	secrets := []string{pw, token, key}
	p.env = append(p.env, "TOKEN="+token)
	os.MkdirAll(dir, 0o755)
	for name, content := range map[string]string{"pw.txt": pw, "key.pem": key, "app.conf": "from=file\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	compose := `services:
  app:
    image: ` + ref + `
    restart: always
    read_only: true
    command: ["sh", "-c", "echo start pw=$$(sha256sum < /run/secrets/pw | cut -c1-16) key=$$(sha256sum < /etc/ssl/key.pem | cut -c1-16); exec sleep 1000"]
    secrets:
      - pw
      - source: token
        target: api-token
      - source: key
        target: /etc/ssl/key.pem
        uid: "100"
        gid: "101"
        mode: 0440
    configs:
      - source: inline
        target: /etc/inline.conf
      - source: fromfile
        target: /etc/app/app.conf
        uid: "100"
        mode: 0600
secrets:
  pw: {file: ./pw.txt}
  token: {environment: TOKEN}
  key: {file: ./key.pem}
configs:
  inline: {content: "inline=1"}
  fromfile: {file: ./app.conf}
`
	var outputs []string // of every command but the cats of the secrets
	cli := func(compose string, args ...string) string {
		t.Helper()
		out, stderr, code := p.in(dir, compose, args...)
		outputs = append(outputs, out, stderr)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, stderr)
		}
		return out
	}
	cat := func(when, path, want string) {
		t.Helper()
		if out, stderr, code := p.in(dir, "", "exec", "-T", "app", "cat", path); code != 0 || out != want {
			t.Errorf("%s: cat %s: exit %d, %q, %s; want %q", when, path, code, out, stderr, want)
		}
	}
	start := time.Now()
	cli(compose, "up", "-d", "--wait")
	t.Logf("up -d --wait with 3 secrets and 2 configs: %s", time.Since(start))
	cat("after up", "/run/secrets/pw", pw)
	cat("after up", "/run/secrets/api-token", token)
	cat("after up", "/etc/ssl/key.pem", key)
	cat("after up", "/etc/inline.conf", "inline=1")
	cat("after up", "/etc/app/app.conf", "from=file\n")
	const look = `stat -c '%n %u %g %a' /run/secrets/pw /run/secrets/api-token /etc/ssl/key.pem /etc/inline.conf /etc/app/app.conf
awk '$2 == "/run/secrets" || $2 == "/etc/ssl/key.pem" || $2 == "/" {print $1, $2, $3, $4}' /proc/mounts
touch /written 2>/dev/null || echo root read-only`
	out := cli("", "exec", "-T", "app", "sh", "-c", look)
	for _, want := range []string{
		"/run/secrets/pw 0 0 444\n", "/run/secrets/api-token 0 0 444\n", "/etc/ssl/key.pem 100 101 440\n",
		"/etc/inline.conf 0 0 444\n", "/etc/app/app.conf 100 0 600\n",
		"tmpfs /run/secrets tmpfs ro,nosuid,nodev,noexec,", "tmpfs /etc/ssl/key.pem tmpfs ro,nosuid,nodev,noexec,",
		"root read-only\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("in the VM: no %q in:\n%s", want, out)
		}
	}
	started := "start pw=" + sha16(pw) + " key=" + sha16(key) + "\n"
	logs := func(when string, n int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			out := cli("", "logs", "--no-log-prefix", "app")
			if strings.Count(out, started) == n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: logs have not %d times %q:\n%s", when, n, started, out)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	logs("after up", 1)

	cli("", "ps")
	cli("", "ps", "--format", "json")
	cli("", "plan")
	cli("", "plan", "--format", "json")
	if out := cli("", "config"); !strings.Contains(out, filepath.Join(dir, "pw.txt")) || !strings.Contains(out, "environment: TOKEN") {
		t.Errorf("config does not name the secrets' sources:\n%s", out)
	}
	cli("", "config", "--format", "json")

	// The restart policy boots a killed VM again, with its files.
	restarted := func(when string, old int) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for e := p.ps(dir)["app"]; e.State != "running" || e.Pid == old; e = p.ps(dir)["app"] {
			if time.Now().After(deadline) {
				b, _ := os.ReadFile(filepath.Join(state, "supervisor.log"))
				t.Fatalf("%s: app was not restarted: %+v\nsupervisor log:\n%s", when, e, b)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	before := p.ps(dir)["app"].Pid
	syscall.Kill(before, syscall.SIGKILL)
	restarted("VM killed", before)
	cat("after a restart", "/run/secrets/pw", pw)
	logs("after a restart", 2)

	// A new supervisor reads the contents from the project again: here
	// for a VM that died while no supervisor ran.
	sups := supervisors(state)
	if len(sups) != 1 {
		t.Fatalf("supervisors: %v", sups)
	}
	syscall.Kill(sups[0], syscall.SIGKILL)
	waitGone(supervisors, state)
	before = p.ps(dir)["app"].Pid
	syscall.Kill(before, syscall.SIGKILL)
	if left := waitGone(qemus, state); len(left) > 0 {
		t.Fatalf("qemu %v survived SIGKILL", left)
	}
	cli("", "up", "-d", "--wait")
	restarted("VM killed with no supervisor", before)
	cat("after the supervisor was replaced", "/run/secrets/api-token", token)
	cat("after the supervisor was replaced", "/etc/ssl/key.pem", key)

	// A one-off VM gets them too.
	if out, stderr, code := p.in(dir, "", "run", "--rm", "-T", "app", "sh", "-c", "sha256sum < /run/secrets/api-token | cut -c1-16; stat -c '%u %a' /etc/app/app.conf"); code != 0 || out != sha16(token)+"\n100 600\n" {
		t.Errorf("run: exit %d, %q, %s", code, out, stderr)
	}

	// Nowhere else: outputs, the state dir, processes' arguments; as
	// they are, or in base64 (as JSON has bytes).
	var forms []string
	for _, s := range secrets {
		forms = append(forms, encodings(s)...)
	}
	for _, s := range forms {
		for i, o := range outputs {
			if strings.Contains(o, s) {
				t.Errorf("output %d has a secret's value:\n%s", i, o)
			}
		}
		for _, f := range filesHolding(t, state, s) {
			t.Errorf("%s holds a secret's value", f)
		}
		if pids := pidsWhere(func(_ int, b []byte) bool { return bytes.Contains(b, []byte(s)) }); len(pids) > 0 {
			t.Errorf("processes %v have a secret's value in their arguments", pids)
		}
	}

	// A changed secret: plan names it, not its value; up recreates.
	hash := cli("", "config", "--hash", "app")
	pw2 := "pw-" + randomValue(t)
	if err := os.WriteFile(filepath.Join(dir, "pw.txt"), []byte(pw2), 0o600); err != nil {
		t.Fatal(err)
	}
	if again := cli("", "config", "--hash", "app"); again == hash {
		t.Errorf("config --hash app is %s before and after the secret changed", hash)
	}
	if out := cli("", "plan"); !strings.Contains(out, `recreate  app-1  secrets: "pw" changed`) || strings.Contains(out, pw2) {
		t.Errorf("plan after the secret changed:\n%s", out)
	}
	if out := cli("", "plan", "--format", "json"); !strings.Contains(out, `"secrets:pw"`) || strings.Contains(out, pw2) {
		t.Errorf("plan --format json after the secret changed:\n%s", out)
	}
	cli("", "up", "-d", "--wait")
	cat("after the secret changed", "/run/secrets/pw", pw2)
	if out := cli("", "plan"); !strings.Contains(out, "nothing  app-1  up to date") {
		t.Errorf("plan after up:\n%s", out)
	}
	for _, s := range encodings(pw2) {
		for _, f := range filesHolding(t, state, s) {
			t.Errorf("%s holds the new secret's value", f)
		}
	}
}

// encodings are s and the parts of its base64 forms that any base64 of a
// text that holds s holds, wherever s starts in it.
func encodings(s string) []string {
	out := []string{s}
	for k := range 3 {
		e := base64.StdEncoding.EncodeToString([]byte(s[k:]))
		out = append(out, e[:len(e)/4*4-4]) // the last quantum depends on what follows
	}
	return out
}

// randomValue is a value no file holds by chance.
func randomValue(t *testing.T) string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// sha16 is the start of a value's sha256, as the service prints it.
func sha16(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:16]
}

// filesHolding lists the files under dir whose raw bytes hold s (sockets
// and the like skipped), disk images included.
func filesHolding(t *testing.T, dir, s string) []string {
	t.Helper()
	var out []string
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return nil
		}
		n++
		found, err := fileHolds(path, []byte(s))
		if err != nil {
			return fmt.Errorf("reading %s: %w", path, err)
		}
		if found {
			out = append(out, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 3 {
		t.Fatalf("only %d files under %s: nothing to search", n, dir)
	}
	return out
}

// fileHolds reads the file in pieces (a sparse disk image is large) and
// reports whether s is in it.
func fileHolds(path string, s []byte) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	buf := make([]byte, 4<<20)
	keep := 0 // bytes of the last piece kept, a match may straddle two
	for {
		n, err := f.Read(buf[keep:])
		if bytes.Contains(buf[:keep+n], s) {
			return true, nil
		}
		if err == io.EOF {
			return false, nil
		}
		if err != nil {
			return false, err
		}
		total := keep + n
		keep = min(len(s)-1, total)
		copy(buf, buf[total-keep:total])
	}
}
