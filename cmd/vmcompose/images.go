package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/urfave/cli/v2"
	"golang.org/x/sync/errgroup"

	"github.com/vmcompose/vmcompose/oci"
	"github.com/vmcompose/vmcompose/oci/rootfs"
	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/reconcile"
)

func openStore() (*oci.Store, error) {
	dir, err := oci.DefaultDir()
	if err != nil {
		return nil, err
	}
	return oci.Open(dir)
}

func pullCommand() *cli.Command {
	return &cli.Command{
		Name:      "pull",
		Usage:     "pull service images and prepare their root filesystems",
		ArgsUsage: "[SERVICE...]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "policy", Value: "always", Usage: "pull policy: always, missing, never or daily"},
			&cli.BoolFlag{Name: "ignore-pull-failures", Usage: "pull what can be pulled and ignore the rest"},
			&cli.BoolFlag{Name: "ignore-buildable", Usage: "skip the images that can be built (services with build:)"},
			&cli.StringSliceFlag{Name: "insecure-registry", Usage: "allow plain HTTP for this `HOST[:PORT]`"},
			&cli.IntFlag{Name: "jobs", Value: oci.DefaultJobs, Usage: "layers downloaded at once per image"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "pull without printing progress"},
		},
		Action: runPull,
	}
}

// pullTarget is one image to pull, with the services that use it.
// buildable says that all of them can build it instead: pulling it is
// then worth a try only, as docker compose has it.
type pullTarget struct {
	ref, platform string
	services      []string
	policy        oci.PullPolicy
	buildable     bool
}

// pullTargets lists the images of the named services (all when none),
// one entry per image and platform, and says which services it skips and
// why, as docker compose prints "Skipped": a build: service without
// image: (nothing to pull: `vmcompose build` makes its image), one whose
// pull_policy forbids pulling, and with ignoreBuildable
// (--ignore-buildable) every build: service.
func pullTargets(services types.Services, names []string, policy oci.PullPolicy, ignoreBuildable bool) (targets []*pullTarget, skipped []string, err error) {
	if len(names) == 0 {
		for name := range services {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		svc, ok := services[name]
		if !ok {
			return nil, nil, fmt.Errorf("no such service: %s", name)
		}
		p := policy
		switch {
		case svc.Image == "" && svc.Build != nil:
			skipped = append(skipped, fmt.Sprintf("service %q: skipped: built by `vmcompose build`, not pulled", name))
			continue
		case svc.Image == "":
			continue // loading refuses it
		case svc.PullPolicy == types.PullPolicyNever || svc.PullPolicy == types.PullPolicyBuild:
			skipped = append(skipped, fmt.Sprintf("service %q: skipped: pull_policy: %s", name, svc.PullPolicy))
			continue
		case svc.Build != nil && ignoreBuildable:
			skipped = append(skipped, fmt.Sprintf("service %q: skipped: --ignore-buildable, and `vmcompose build` can build %s", name, svc.Image))
			continue
		case svc.PullPolicy == types.PullPolicyMissing || svc.PullPolicy == types.PullPolicyIfNotPresent:
			if p == oci.PullAlways {
				p = oci.PullMissing
			}
		}
		i := slices.IndexFunc(targets, func(t *pullTarget) bool { return t.ref == svc.Image && t.platform == svc.Platform })
		if i < 0 {
			targets = append(targets, &pullTarget{ref: svc.Image, platform: svc.Platform, policy: p, buildable: true})
			i = len(targets) - 1
		}
		targets[i].services = append(targets[i].services, name)
		targets[i].buildable = targets[i].buildable && svc.Build != nil
	}
	return targets, skipped, nil
}

func runPull(c *cli.Context) error {
	policy, err := oci.ParsePullPolicy(c.String("policy"))
	if err != nil {
		return fmt.Errorf("--policy: %w", err)
	}
	p, err := loadProject(c)
	if err != nil {
		return err
	}
	targets, skipped, err := pullTargets(p.Services, c.Args().Slice(), policy, c.Bool("ignore-buildable"))
	if err != nil {
		return err
	}
	if !c.Bool("quiet") {
		for _, s := range skipped {
			fmt.Fprintln(c.App.ErrWriter, s)
		}
	}
	store, err := openStore()
	if err != nil {
		return err
	}
	prog := newProgress(c)
	if c.Bool("quiet") {
		prog = quietProgress{}
	}
	defer prog.Close()
	opts := []oci.Option{
		oci.WithProgress(prog.Image),
		oci.WithJobs(c.Int("jobs")),
		oci.WithInsecureRegistries(c.StringSlice("insecure-registry")...),
	}
	var f pullFailures
	g, ctx := errgroup.WithContext(c.Context)
	g.SetLimit(4)
	for _, t := range targets {
		g.Go(func() error {
			err := pullAndPrepare(ctx, store, t, prog, opts)
			if err == nil || errors.Is(err, context.Canceled) || (!t.buildable && !c.Bool("ignore-pull-failures")) {
				return err
			}
			f.add(t, err)
			return nil
		})
	}
	err = g.Wait()
	if ferr := f.report(c.App.ErrWriter, c.Bool("ignore-pull-failures")); err == nil {
		err = ferr
	}
	return err
}

// pullFailures are the pulls that failed without stopping the others: all
// of them with --ignore-pull-failures, and those of images that can be
// built, which docker compose's pull tries without failing fast.
type pullFailures struct {
	mu        sync.Mutex
	errs      []error
	mustBuild []string // the services whose image is to be built instead
}

func (f *pullFailures) add(t *pullTarget, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.errs = append(f.errs, err)
	if t.buildable {
		f.mustBuild = append(f.mustBuild, t.services...)
	}
}

// report says, as docker compose does, which services must be built as
// their images could not be pulled, and returns the failures in one
// error: compose's pull fails for the images that can be built too, it
// only goes on pulling the others. With ignore (--ignore-pull-failures)
// each failure is a warning instead.
func (f *pullFailures) report(w io.Writer, ignore bool) error {
	if len(f.mustBuild) > 0 {
		slices.Sort(f.mustBuild)
		fmt.Fprintf(w, "warning: some service images must be built from source: run `vmcompose build %s`\n", strings.Join(f.mustBuild, " "))
	}
	if !ignore {
		return joinOneLine(f.errs)
	}
	for _, err := range f.errs {
		fmt.Fprintf(w, "warning: %s\n", err)
	}
	return nil
}

// joinOneLine joins errs as errors.Join does, in one line: a command's
// error ends in one line on stderr.
func joinOneLine(errs []error) error {
	if len(errs) <= 1 {
		return errors.Join(errs...)
	}
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	return fmt.Errorf("%s", strings.Join(msgs, "; "))
}

// pullAndPrepare pulls one image and builds its root filesystem image,
// which every service of that image then shares.
func pullAndPrepare(ctx context.Context, store *oci.Store, t *pullTarget, prog progress, opts []oci.Option) error {
	opts = append(slices.Clip(opts), oci.WithPolicy(t.policy), oci.WithPlatform(t.platform))
	img, err := store.Pull(ctx, t.ref, opts...)
	if err != nil {
		return fmt.Errorf("service %s: %w", strings.Join(t.services, ", "), err)
	}
	start := time.Now()
	_, built, err := rootfs.Ensure(ctx, img.V1, store.RootfsDir())
	if err != nil {
		return fmt.Errorf("service %s: root filesystem of %s: %w", strings.Join(t.services, ", "), img.Ref, err)
	}
	if built {
		prog.Step(img.Ref, fmt.Sprintf("root filesystem built in %s", time.Since(start).Round(time.Millisecond)))
	} else {
		prog.Step(img.Ref, "up to date")
	}
	return nil
}

func imagesCommand() *cli.Command {
	return &cli.Command{
		Name:  "images",
		Usage: "list the images the project's services use",
		Flags: []cli.Flag{
			formatFlag("table", "json"),
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "only print the image digests"},
		},
		Action: runImages,
	}
}

// imageRow is one line of `images`; its JSON form is part of the CLI.
type imageRow struct {
	Service  string `json:"service"`
	Ref      string `json:"ref"`
	Digest   string `json:"digest,omitempty"`
	ID       string `json:"id,omitempty"`
	Platform string `json:"platform,omitempty"`
	Size     int64  `json:"size,omitempty"`
	Rootfs   bool   `json:"rootfs"`
	Status   string `json:"status"`
}

func runImages(c *cli.Context) error {
	format, err := checkFormat(c, "table", "json")
	if err != nil {
		return err
	}
	p, err := loadProject(c)
	if err != nil {
		return err
	}
	store, err := openStore()
	if err != nil {
		return err
	}
	var rows []imageRow
	for _, name := range p.ServiceNames() {
		svc := p.Services[name]
		ref := planner.ImageName(p.Name, svc)
		row := imageRow{Service: name, Ref: ref, Status: "not pulled"}
		present := "pulled"
		if svc.Build != nil {
			row.Status, present = "not built", "built"
		}
		if img, err := store.Image(ref, oci.WithPlatform(svc.Platform)); err == nil {
			row.Digest, row.ID, row.Size, row.Status = img.Digest.String(), img.ID.String(), img.Size, present
			row.Ref, row.Platform = img.Ref, img.Platform.String()
			row.Rootfs = fileExists(rootfs.Path(store.RootfsDir(), img.Digest.Hex))
		} else if !errors.Is(err, oci.ErrNotFound) {
			return err
		}
		rows = append(rows, row)
	}
	return printImages(c, format, rows)
}

func printImages(c *cli.Context, format string, rows []imageRow) error {
	out := c.App.Writer
	if c.Bool("quiet") {
		for _, r := range rows {
			if r.Digest != "" {
				fmt.Fprintln(out, r.Digest)
			}
		}
		return nil
	}
	if format == "json" {
		enc := json.NewEncoder(out)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
		return nil
	}
	w := tabwriter.NewWriter(out, 0, 0, 3, ' ', 0)
	fmt.Fprintln(w, "SERVICE\tIMAGE\tDIGEST\tPLATFORM\tSIZE\tROOTFS")
	for _, r := range rows {
		digest, size, fs := r.Status, "", "-"
		if r.Digest != "" {
			digest, size = shortDigest(r.Digest), oci.HumanSize(r.Size)
			fs = "no"
			if r.Rootfs {
				fs = "yes"
			}
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Service, r.Ref, digest, r.Platform, size, fs)
	}
	return w.Flush()
}

func imageCommand() *cli.Command {
	return &cli.Command{
		Name:  "image",
		Usage: "manage the shared image store",
		Subcommands: []*cli.Command{{
			Name:      "import",
			Usage:     "import docker save or OCI layout archives (.tar, .tar.gz) for offline use",
			ArgsUsage: "FILE...",
			Action:    runImageImport,
		}, {
			Name:    "ls",
			Aliases: []string{"list"},
			Usage:   "list every image in the store",
			Flags:   []cli.Flag{formatFlag("table", "json")},
			Action:  runImageList,
		}, {
			Name:      "rm",
			Usage:     "forget image references; image prune then frees their space",
			ArgsUsage: "REF...",
			Action:    runImageRemove,
		}, {
			Name:   "prune",
			Usage:  "remove blobs and root filesystem images no image references",
			Action: runImagePrune,
		}},
	}
}

func runImageImport(c *cli.Context) error {
	if c.NArg() == 0 {
		return fmt.Errorf("image import: name the archives to import")
	}
	store, err := openStore()
	if err != nil {
		return err
	}
	prog := newProgress(c)
	defer prog.Close()
	for _, file := range c.Args().Slice() {
		imgs, err := store.Import(c.Context, file, oci.WithProgress(prog.Image))
		if err != nil {
			return err
		}
		for _, img := range imgs {
			fmt.Fprintf(c.App.Writer, "imported %s %s\n", img.Ref, img.Digest)
		}
	}
	return nil
}

func runImageList(c *cli.Context) error {
	format, err := checkFormat(c, "table", "json")
	if err != nil {
		return err
	}
	store, err := openStore()
	if err != nil {
		return err
	}
	imgs, err := store.Images()
	if err != nil {
		return err
	}
	var rows []imageRow
	for _, img := range imgs {
		rows = append(rows, imageRow{Ref: img.Ref, Digest: img.Digest.String(), ID: img.ID.String(), Platform: img.Platform.String(),
			Size: img.Size, Rootfs: fileExists(rootfs.Path(store.RootfsDir(), img.Digest.Hex)), Status: "pulled"})
	}
	if format == "json" {
		return printImages(c, format, rows)
	}
	w := tabwriter.NewWriter(c.App.Writer, 0, 0, 3, ' ', 0)
	fmt.Fprintln(w, "IMAGE\tDIGEST\tPLATFORM\tSIZE\tROOTFS")
	for _, r := range rows {
		fs := "no"
		if r.Rootfs {
			fs = "yes"
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Ref, shortDigest(r.Digest), r.Platform, oci.HumanSize(r.Size), fs)
	}
	return w.Flush()
}

func runImageRemove(c *cli.Context) error {
	store, err := openStore()
	if err != nil {
		return err
	}
	for _, ref := range c.Args().Slice() {
		if err := store.Remove(ref); err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "removed %s\n", ref)
	}
	return nil
}

func runImagePrune(c *cli.Context) error {
	rep, err := pruneImages(c.Context)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(c.App.Writer, pruneSummary(rep))
	return err
}

// pruneImages frees what no image in the store refers to, keeping the
// root filesystems that a VM of any project, running or stopped, boots
// from (a tag pulled again leaves its old image to those VMs).
func pruneImages(ctx context.Context) (oci.PruneReport, error) {
	store, err := openStore()
	if err != nil {
		return oci.PruneReport{}, err
	}
	dir, err := reconcile.StateDir("_")
	if err != nil {
		return oci.PruneReport{}, err
	}
	inUse, err := reconcile.PathsInUse(ctx, filepath.Dir(dir), localDriver)
	if err != nil {
		return oci.PruneReport{}, err
	}
	return store.Prune(ctx, oci.PruneKeep(inUse))
}

func pruneSummary(rep oci.PruneReport) string {
	s := fmt.Sprintf("removed %d blobs and %d root filesystem images, freed %s", rep.Blobs, len(rep.Rootfs), oci.HumanSize(rep.Bytes))
	if n := len(rep.KeptInUse); n > 0 {
		s += fmt.Sprintf("; kept %d root %s that VMs boot from", n, plural(n, "filesystem"))
	}
	return s
}
