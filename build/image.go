package build

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/vmcompose/vmcompose/internal/atomicfile"
	"github.com/vmcompose/vmcompose/internal/flock"
	"github.com/vmcompose/vmcompose/oci"
)

// ImageEnv names an image archive (docker save or OCI) that EnsureImage
// imports instead of running mmdebstrap: tests point it at an archive
// ExportImage wrote, so that each temporary store need not make its own.
const ImageEnv = "VMCOMPOSE_BUILDER_IMAGE"

// LabelRecipe is the image label that holds the recipe the builder image
// was made with (RecipeText).
const LabelRecipe = "io.github.vmcompose.builder.recipe"

// MakingMessage is the line EnsureImage reports when it starts mmdebstrap.
const MakingMessage = "making the builder image from Debian packages (about a minute, once)"

// recipe is mmdebstrap's command line but the target: the essential
// variant (no apt; the builder needs none) plus buildah, crun for
// --isolation oci, fuse-overlayfs, and netavark, the smallest
// container-network-stack buildah's dependencies accept; usr-is-merged
// spares the usrmerge conversion. Docs, man pages, locales and info pages
// are left out, copyright files kept: 153 MB instead of 246 MB. The
// host's resolv.conf and hostname, which mmdebstrap copies in, are
// removed: the guest writes its own.
//
// No mirror is named: for a stable suite mmdebstrap takes
// http://deb.debian.org/debian (suite and suite-updates) and
// http://security.debian.org/debian-security, whatever the host's apt
// sources say.
var recipe = []string{
	"--variant=essential",
	"--include=buildah,crun,fuse-overlayfs,ca-certificates,usr-is-merged,netavark",
	"--dpkgopt=path-exclude=/usr/share/doc/*",
	"--dpkgopt=path-include=/usr/share/doc/*/copyright",
	"--dpkgopt=path-exclude=/usr/share/man/*",
	"--dpkgopt=path-exclude=/usr/share/locale/*",
	"--dpkgopt=path-exclude=/usr/share/info/*",
	`--customize-hook=rm -f "$1/etc/resolv.conf" "$1/etc/hostname"`,
	"bookworm",
}

// imageConfig is the builder image's process config, but the label: the
// builder VM idles until builds are run in it with exec.
var imageConfig = v1.Config{
	Env: []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
	Cmd: []string{"sleep", "infinity"},
}

// RecipeText is the mmdebstrap command the builder image is made with
// (the target left out).
func RecipeText() string { return "mmdebstrap " + strings.Join(recipe, " ") }

// ImageRef is the builder image's reference, "vmcompose.local/builder:"
// and 12 hex digits of a hash of the recipe and the config: a changed
// recipe names a new image, which EnsureImage then makes.
func ImageRef() string {
	b, err := json.Marshal(struct {
		Args []string
		Cfg  v1.Config
	}{recipe, imageConfig})
	if err != nil {
		panic(err) // strings only
	}
	sum := sha256.Sum256(b)
	return "vmcompose.local/builder:" + hex.EncodeToString(sum[:])[:12]
}

// EnsureImage returns the builder image from store, putting it there
// first when it is missing: imported from the archive ImageEnv names, or
// made with mmdebstrap (report gets MakingMessage then). Concurrent calls,
// in this process or others sharing the store, make it once.
func EnsureImage(ctx context.Context, store *oci.Store, report func(string)) (oci.Image, error) {
	ref := ImageRef()
	if img, err := store.Image(ref); err == nil {
		return img, nil
	} else if !errors.Is(err, oci.ErrNotFound) {
		return oci.Image{}, err
	}
	unlock, err := flock.Lock(ctx, filepath.Join(store.Dir(), "builder.lock"), false)
	if err != nil {
		return oci.Image{}, fmt.Errorf("builder image: %w", err)
	}
	defer unlock()
	if img, err := store.Image(ref); err == nil {
		return img, nil // made while this call waited for the lock
	}
	if file := os.Getenv(ImageEnv); file != "" {
		return importImage(ctx, store, file)
	}
	return makeImage(ctx, store, report)
}

// importImage imports the builder image from file and records it under
// ImageRef. The archive holds that reference, or one image only; an
// image labelled with another recipe is refused.
func importImage(ctx context.Context, store *oci.Store, file string) (oci.Image, error) {
	ref := ImageRef()
	imgs, err := store.Import(ctx, file)
	if err != nil {
		return oci.Image{}, fmt.Errorf("builder image from %s: %w", ImageEnv, err)
	}
	var img oci.Image
	for _, i := range imgs {
		if i.Ref == ref {
			img = i
		}
	}
	if img.Ref == "" {
		if len(imgs) != 1 {
			return oci.Image{}, fmt.Errorf("builder image from %s=%s: %d images, none named %s", ImageEnv, file, len(imgs), ref)
		}
		img = imgs[0]
	}
	if r := img.Config.Config.Labels[LabelRecipe]; r != "" && r != RecipeText() {
		return oci.Image{}, fmt.Errorf("builder image from %s=%s: %s was made by %q, not %q: export a current one or unset %s", ImageEnv, file, img.Ref, r, RecipeText(), ImageEnv)
	}
	if img.Ref == ref {
		return img, nil
	}
	return store.Put(ctx, ref, img.V1)
}

// makeImage runs mmdebstrap and stores its root file system as the
// builder image. The caller holds the builder lock, so the work folder in
// the store (not /tmp, often a tmpfs: the tar is 153 MB and mmdebstrap
// unpacks 260 MB beside it) belongs to this call; a killed call's leftover
// is removed by the next one.
func makeImage(ctx context.Context, store *oci.Store, report func(string)) (oci.Image, error) {
	mm, err := exec.LookPath("mmdebstrap")
	if err != nil {
		return oci.Image{}, errors.New("making the builder image: mmdebstrap is not installed (apt-get install mmdebstrap; make setup installs it)")
	}
	work := filepath.Join(store.Dir(), "builder.tmp")
	if err := os.RemoveAll(work); err != nil {
		return oci.Image{}, fmt.Errorf("making the builder image: %w", err)
	}
	if err := os.Mkdir(work, 0o700); err != nil {
		return oci.Image{}, fmt.Errorf("making the builder image: %w", err)
	}
	defer os.RemoveAll(work)
	if report != nil {
		report(MakingMessage)
	}
	rootfs := filepath.Join(work, "rootfs.tar")
	if err := runMmdebstrap(ctx, mm, work, rootfs); err != nil {
		return oci.Image{}, fmt.Errorf("making the builder image: %w", err)
	}
	cfg := imageConfig
	cfg.Labels = map[string]string{LabelRecipe: RecipeText()}
	img, err := oci.ImageFromRootfs(rootfs, cfg)
	if err != nil {
		return oci.Image{}, fmt.Errorf("making the builder image: %w", err)
	}
	return store.Put(ctx, ImageRef(), img)
}

// runMmdebstrap writes the recipe's root file system to target, with its
// temporary files in work. A failure shows the last lines of its output.
func runMmdebstrap(ctx context.Context, mm, work, target string) error {
	cmd := exec.CommandContext(ctx, mm, append(append([]string{}, recipe...), target)...)
	cmd.Env = append(os.Environ(), "TMPDIR="+work)
	// SIGTERM lets mmdebstrap stop apt and remove its chroot.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("mmdebstrap %s (%s), its last lines:\n%s", err, strings.Join(recipe, " "), lastLines(out.String(), 10))
	}
	return nil
}

// lastLines returns the last n lines of s, indented.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	lines = lines[max(0, len(lines)-n):]
	return "  " + strings.Join(lines, "\n  ")
}

// ExportImage writes the builder image in store to path as a docker save
// archive, which EnsureImage imports when ImageEnv names it. The image
// must be in the store (EnsureImage first).
func ExportImage(ctx context.Context, store *oci.Store, path string) error {
	img, err := store.Image(ImageRef())
	if err != nil {
		return fmt.Errorf("exporting the builder image: %w", err)
	}
	tag, err := name.NewTag(ImageRef())
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err = atomicfile.Write(path, 0o644, func(f *os.File) error { return tarball.Write(tag, img.V1, f) })
	if err != nil {
		return fmt.Errorf("exporting the builder image: %w", err)
	}
	return nil
}
