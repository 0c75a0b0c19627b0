package main_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vmcompose/vmcompose/internal/testenv"
)

// examplesDir is the repository's examples/, run in place.
func examplesDir(t *testing.T, name string) string {
	dir, err := filepath.Abs(filepath.Join("../../examples", name))
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// importExampleImage packs an image from this host's Debian packages with
// examples/mkimage and imports it into the test's store.
func importExampleImage(t *testing.T, p *runProject, args ...string) {
	t.Helper()
	archive := filepath.Join(t.TempDir(), "image.tar")
	mk := exec.Command("go", append([]string{"run", "../../examples/mkimage", "-o", archive}, args...)...)
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("mkimage %v: %v\n%s", args, err, out)
	}
	if _, stderr, code := p.in(t.TempDir(), "", "image", "import", archive); code != 0 {
		t.Fatalf("image import: %s", stderr)
	}
}

// TestHelloExample brings examples/hello up as the README's demo does:
// the client's healthcheck fetches the web page by service name, the host
// fetches it through the published port, and down removes everything.
func TestHelloExample(t *testing.T) {
	p := newRunProject(t)
	importExampleImage(t, p, "-ref", "vmcompose.local/busybox:1", "-busybox")
	dir := examplesDir(t, "hello")
	defer p.in(dir, "", "down")
	if _, stderr, code := p.in(dir, "", "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up -d --wait: exit %d\n%s", code, stderr)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://127.0.0.1:8080/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello from a vmcompose VM\n" {
		t.Errorf("page: %q", body)
	}
	if e := p.ps(dir)["client"]; e.Health != "healthy" {
		t.Errorf("client (whose healthcheck fetches http://web/): %+v", e)
	}
	if _, stderr, code := p.in(dir, "", "down"); code != 0 {
		t.Fatalf("down: %s", stderr)
	}
	if qs := qemus(filepath.Join(p.home, "state")); len(qs) != 0 {
		t.Errorf("qemu processes after down: %v", qs)
	}
	if _, err := net.DialTimeout("tcp", "127.0.0.1:8080", time.Second); err == nil {
		t.Error("port 8080 still answers after down")
	}
}

// TestRedisExample runs examples/redis: Debian's redis-server packed into
// an image, a client VM that counts visits in it by service name, and the
// host reading the count through the published port.
func TestRedisExample(t *testing.T) {
	server, err := filepath.EvalSymlinks("/usr/bin/redis-server")
	if err != nil {
		testenv.Missing(t, "redis-server: %v (make setup installs it)", err)
	}
	p := newRunProject(t)
	importExampleImage(t, p, "-ref", "vmcompose.local/redis:7", "-busybox", "-ldd",
		"/usr/bin/redis-server", server, "/usr/bin/redis-cli")
	dir := examplesDir(t, "redis")
	defer p.in(dir, "", "down")
	if _, stderr, code := p.in(dir, "", "up", "-d", "--wait"); code != 0 {
		t.Fatalf("up -d --wait: exit %d\n%s", code, stderr)
	}
	get := func() string {
		c, err := net.DialTimeout("tcp", "127.0.0.1:6380", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprint(c, "*2\r\n$3\r\nGET\r\n$6\r\nvisits\r\n")
		r := bufio.NewReader(c)
		head, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(head, "$-1") {
			return ""
		}
		value, _ := r.ReadString('\n')
		return strings.TrimSpace(value)
	}
	first := ""
	deadline := time.Now().Add(20 * time.Second)
	for first == "" && time.Now().Before(deadline) {
		first = get()
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(2500 * time.Millisecond)
	second := get()
	if first == "" || second == first {
		t.Errorf("visits %q then %q: the counter service is not counting", first, second)
	}
	if _, stderr, code := p.in(dir, "", "down"); code != 0 {
		t.Fatalf("down: %s", stderr)
	}
}

// TestDevloopExample runs examples/devloop as its comment says, in a copy:
// watch serves the page, an edit of site/index.html is served within a
// few seconds without a restart, an edit of conf/greeting.txt restarts
// the server with it, Ctrl-C ends watch and down removes the VM.
func TestDevloopExample(t *testing.T) {
	p := newRunProject(t)
	importExampleImage(t, p, "-ref", "vmcompose.local/busybox:1", "-busybox")
	dir := filepath.Join(t.TempDir(), "devloop")
	if err := os.CopyFS(dir, os.DirFS(examplesDir(t, "devloop"))); err != nil {
		t.Fatal(err)
	}
	p.cleanup(dir)
	c, _, werr := p.background(dir, "Watching 1 service: web", "watch", "--quiet")
	defer func() {
		if c.ProcessState == nil {
			c.Process.Kill()
			c.Wait()
		}
	}()
	served := func(path, want string) {
		t.Helper()
		awaitServed(t, "http://127.0.0.1:8082"+path, want, 5*time.Second, werr)
	}
	served("/", "<h1>Hello from a vmcompose VM</h1>")
	served("/greeting.txt", "Hello")
	pid := p.ps(dir)["web"].Pid
	edit := func(rel, data string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, rel), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	edit("site/index.html", "<h1>Edited</h1>\n")
	served("/", "<h1>Edited</h1>")
	edit("conf/greeting.txt", "Bonjour\n")
	served("/greeting.txt", "Bonjour")
	if e := p.ps(dir)["web"]; e.Pid != pid {
		t.Errorf("the VM was replaced (pid %d, then %+v): sync+restart restarts the process inside it", pid, e)
	}

	c.Process.Signal(os.Interrupt)
	if err := c.Wait(); err != nil {
		t.Errorf("watch after Ctrl-C: %v\n%s", err, werr)
	}
	if _, stderr, code := p.in(dir, "", "down"); code != 0 {
		t.Fatalf("down: %s", stderr)
	}
	if qs := qemus(filepath.Join(p.home, "state")); len(qs) != 0 {
		t.Errorf("qemu processes after down: %v", qs)
	}
}

// awaitServed fails the test unless url serves a body that contains want
// within d; log (watch's stderr) goes with the failure.
func awaitServed(t *testing.T, url, want string, d time.Duration, log fmt.Stringer) {
	t.Helper()
	var got string
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if got = httpBody(url); strings.Contains(got, want) {
			return
		}
	}
	t.Fatalf("%s: %q after %s, want %q\nwatch's stderr:\n%s", url, got, d, want, log)
}

// httpBody is what url serves, or the error's text.
func httpBody(url string) string {
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// TestBuildappExample runs examples/buildapp as its comment says: watch
// builds the image (FROM the busybox image of ../devloop/build-image) and
// starts the server; a page edit is synced into the VM; an edit of a
// file the Dockerfile copies rebuilds the image and the new VM serves it.
func TestBuildappExample(t *testing.T) {
	p := newBuildProject(t)
	importExampleImage(t, p, "-ref", "vmcompose.local/busybox:1", "-busybox")
	dir := filepath.Join(t.TempDir(), "buildapp")
	if err := os.CopyFS(dir, os.DirFS(examplesDir(t, "buildapp"))); err != nil {
		t.Fatal(err)
	}
	p.cleanup(dir)
	c, _, werr := p.background(dir, "Watching 1 service: web", "watch", "--quiet")
	defer func() {
		if c.ProcessState == nil {
			c.Process.Kill()
			c.Wait()
		}
	}()
	const site = "http://127.0.0.1:8083"
	awaitServed(t, site+"/built.txt", "Hello from an image vmcompose built\nmessage of the day: one", 10*time.Second, werr)
	write := writer(t, dir)
	write("app/www/index.html", "<h1>Edited</h1>\n")
	awaitServed(t, site+"/", "<h1>Edited</h1>", 10*time.Second, werr)
	write("app/motd.txt", "message of the day: two\n")
	awaitServed(t, site+"/built.txt", "message of the day: two", 120*time.Second, werr)
	// The new VM got the page edit too (it is in the rebuilt image as
	// well: the context has it).
	awaitServed(t, site+"/", "<h1>Edited</h1>", 10*time.Second, werr)
	c.Process.Signal(os.Interrupt)
	if err := c.Wait(); err != nil {
		t.Errorf("watch after Ctrl-C: %v\n%s", err, werr)
	}
}
