package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/vmcompose/vmcompose/build"
	"github.com/vmcompose/vmcompose/oci"
	"github.com/vmcompose/vmcompose/vm/kernel"
)

func setupCommand() *cli.Command {
	return &cli.Command{
		Name:  "setup",
		Usage: "put a guest kernel into the store (Debian's cloud kernel, unpacked, never installed)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "builder", Usage: "also make the image of the VM that runs builds (from Debian packages, with mmdebstrap)"},
			&cli.StringFlag{Name: "kernel-package", Usage: "Debian kernel `PACKAGE` to fetch instead of the newest linux-image-*-cloud-* (e.g. linux-image-6.1.0-50-cloud-amd64)"},
			&cli.BoolFlag{Name: "update", Usage: "fetch the newest kernel even when the store has one"},
		},
		Action: runSetup,
	}
}

func runSetup(c *cli.Context) error {
	dir, err := oci.DefaultDir()
	if err != nil {
		return err
	}
	store, err := oci.Open(dir)
	if err != nil {
		return err
	}
	if err := setupKernel(c, dir); err != nil {
		return err
	}
	if !c.Bool("builder") {
		return nil
	}
	return setupBuilder(c, store)
}

func setupKernel(c *cli.Context, dir string) error {
	if !c.Bool("update") && !c.IsSet("kernel-package") {
		k, err := kernel.Find(dir)
		if err == nil {
			_, err = fmt.Fprintf(c.App.Writer, "guest kernel %s (%s) in %s\n", k.Version, k.Source, k.Image)
			return err
		}
		if !errors.Is(err, kernel.ErrNotFound) {
			return err
		}
	}
	var opts []kernel.Option
	if p := c.String("kernel-package"); p != "" {
		opts = append(opts, kernel.WithPackage(p))
	}
	fmt.Fprintln(c.App.ErrWriter, "fetching the guest kernel with apt-get download ...")
	k, err := kernel.Fetch(c.Context, dir, opts...)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.App.Writer, "guest kernel %s (%s) in %s\n", k.Version, k.Source, k.Image)
	return err
}

// setupBuilder makes the builder image unless the store has it. Only the
// line saying that it starts is printed (none with --progress quiet):
// mmdebstrap's output shows when it fails.
func setupBuilder(c *cli.Context, store *oci.Store) error {
	report := func(line string) {
		if c.String("progress") != "quiet" {
			fmt.Fprintln(c.App.ErrWriter, line)
		}
	}
	img, err := build.EnsureImage(c.Context, store, report)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.App.Writer, "builder image %s (%s)\n", img.Ref, img.Digest)
	return err
}
