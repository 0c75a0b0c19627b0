// Command mkimage packs programs installed on this host (from Debian's
// packages) into a single-layer OCI image and writes it as a docker save
// archive, for `vmcompose image import`. The examples use it so that they
// run offline.
//
//	go run ./examples/mkimage -ref vmcompose.local/busybox:1 -busybox -o busybox.tar
//	go run ./examples/mkimage -ref vmcompose.local/redis:7 -ldd -cmd redis-server \
//	    -o redis.tar /usr/bin/redis-server /usr/bin/redis-cli
//
// Each path argument is copied to the same path in the image (a directory
// with everything below it); -ldd adds the shared libraries of the
// programs, -busybox adds /bin/busybox with a link for every applet.
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, " ") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		ref, out, user, workdir string
		useLdd, useBusybox      bool
		cmd, entrypoint, env    list
	)
	flag.StringVar(&ref, "ref", "", "image reference to record, e.g. vmcompose.local/busybox:1")
	flag.StringVar(&out, "o", "", "archive to write")
	flag.StringVar(&user, "user", "", "image User")
	flag.StringVar(&workdir, "workdir", "", "image WorkingDir")
	flag.BoolVar(&useLdd, "ldd", false, "add the shared libraries the programs need")
	flag.BoolVar(&useBusybox, "busybox", false, "add /bin/busybox (busybox-static) and its applets")
	flag.Var(&cmd, "cmd", "image Cmd, one flag per argument")
	flag.Var(&entrypoint, "entrypoint", "image Entrypoint, one flag per argument")
	flag.Var(&env, "env", "image Env entry KEY=VALUE (repeatable)")
	flag.Parse()
	if ref == "" || out == "" {
		return fmt.Errorf("-ref and -o are required")
	}
	tag, err := name.NewTag(ref)
	if err != nil {
		return err
	}

	files := map[string]bool{}
	for _, p := range flag.Args() {
		files[p] = true
	}
	var links map[string]string
	if useBusybox {
		files["/bin/busybox"] = true
		if links, err = busyboxLinks(); err != nil {
			return err
		}
	}
	if useLdd {
		for _, p := range flag.Args() {
			libs, err := sharedLibraries(p)
			if err != nil {
				return err
			}
			for _, l := range libs {
				files[l] = true
			}
		}
	}
	layer, err := buildLayer(files, links)
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(mutate.MediaType(empty.Image, types.OCIManifestSchema1), layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", goarch()
	cfg.Config = v1.Config{
		Cmd: cmd, Entrypoint: entrypoint, User: user, WorkingDir: workdir,
		Env: append([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}, env...),
	}
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	return tarball.WriteToFile(out, tag, img)
}

func goarch() string {
	out, err := exec.Command("dpkg", "--print-architecture").Output()
	if err != nil {
		return "amd64"
	}
	return strings.TrimSpace(string(out))
}

func busyboxLinks() (map[string]string, error) {
	out, err := exec.Command("/bin/busybox", "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("listing busybox applets (install busybox-static): %w", err)
	}
	links := map[string]string{}
	for _, applet := range strings.Fields(string(out)) {
		links["/"+applet] = "/bin/busybox"
	}
	return links, nil
}

var lddLine = regexp.MustCompile(`(?:=> )?(/\S+) \(0x`)

// sharedLibraries lists the libraries ldd says a program loads, symlinks
// and the files they point to both.
func sharedLibraries(path string) ([]string, error) {
	out, err := exec.Command("ldd", path).Output()
	if err != nil {
		return nil, nil // static, or not a program
	}
	var libs []string
	for _, m := range lddLine.FindAllStringSubmatch(string(out), -1) {
		libs = append(libs, linkChain(m[1])...)
	}
	return libs, nil
}

// linkChain is path and, when it is a symlink, every path its chain of
// links names: each must exist in the image for the loader to follow it
// (Debian's /lib64/ld-linux-x86-64.so.2 points at /lib/..., while the
// libraries are found through /usr/lib).
func linkChain(path string) []string {
	chain := []string{path}
	for range 16 {
		target, err := os.Readlink(path)
		if err != nil {
			break
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(path), target)
		}
		path = target
		chain = append(chain, path)
	}
	return chain
}

// buildLayer writes the files (and the directories above them) and the
// symlinks into one uncompressed tar layer, owned by root, sorted.
func buildLayer(files map[string]bool, links map[string]string) (v1.Layer, error) {
	entries := map[string]*tar.Header{}
	var addDirs func(p string)
	addDirs = func(p string) {
		for d := filepath.Dir(p); d != "/"; d = filepath.Dir(d) {
			if _, ok := entries[d]; !ok {
				entries[d] = &tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755}
			}
		}
	}
	data := map[string]string{} // tar name -> host file
	for p := range files {
		err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			info, err := os.Lstat(path)
			if err != nil {
				return err
			}
			h := &tar.Header{Name: path[1:], Mode: int64(info.Mode().Perm()), ModTime: info.ModTime()}
			switch {
			case info.Mode()&fs.ModeSymlink != 0:
				target, err := os.Readlink(path)
				if err != nil {
					return err
				}
				h.Typeflag, h.Linkname = tar.TypeSymlink, target
			case info.IsDir():
				h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
			case info.Mode().IsRegular():
				h.Typeflag, h.Size = tar.TypeReg, info.Size()
				data[h.Name] = path
			default:
				return nil
			}
			addDirs(path)
			entries[path] = h
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	for link, target := range links {
		if _, ok := entries[link]; ok {
			continue
		}
		addDirs(link)
		entries[link] = &tar.Header{Typeflag: tar.TypeSymlink, Name: link[1:], Linkname: target, Mode: 0o777}
	}
	for _, d := range []string{"/etc", "/tmp", "/root"} {
		if _, ok := entries[d]; !ok {
			entries[d] = &tar.Header{Typeflag: tar.TypeDir, Name: d[1:] + "/", Mode: 0o755}
		}
	}
	entries["/tmp"].Mode = 0o1777
	etc := map[string]string{
		"/etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"/etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range slices.Sorted(maps.Keys(entries)) {
		h := entries[p]
		if _, ok := etc[p]; ok {
			continue
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if src, ok := data[h.Name]; ok {
			f, err := os.Open(src)
			if err != nil {
				return nil, err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return nil, err
			}
		}
	}
	for _, p := range slices.Sorted(maps.Keys(etc)) {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p[1:], Mode: 0o644, Size: int64(len(etc[p]))}); err != nil {
			return nil, err
		}
		io.WriteString(tw, etc[p])
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer))
}
