package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/vmcompose/vmcompose/oci"
	"github.com/vmcompose/vmcompose/vm/kernel"
)

func setupCommand() *cli.Command {
	return &cli.Command{
		Name:  "setup",
		Usage: "put a guest kernel into the store (Debian's cloud kernel, unpacked, never installed)",
		Flags: []cli.Flag{
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
	if _, err := oci.Open(dir); err != nil {
		return err
	}
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
