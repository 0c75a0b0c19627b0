// Command fetch-kernel puts Debian's cloud kernel into the vmcompose store
// ($VMCOMPOSE_HOME, else $XDG_DATA_HOME/vmcompose, else
// ~/.local/share/vmcompose) and prints its directory. It does what
// `vmcompose setup` does, for a checkout without the CLI built:
//
//	go run ./scripts/fetch-kernel [-package linux-image-<version>-cloud-amd64-unsigned] [-v]
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"

	"github.com/vmcompose/vmcompose/oci"
	"github.com/vmcompose/vmcompose/vm/kernel"
)

func main() {
	pkg := flag.String("package", "", "Debian kernel package to fetch instead of the newest cloud kernel")
	verbose := flag.Bool("v", false, "log the steps")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *pkg, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "fetch-kernel:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, pkg string, verbose bool) error {
	dir, err := oci.DefaultDir()
	if err != nil {
		return err
	}
	var opts []kernel.Option
	if pkg != "" {
		opts = append(opts, kernel.WithPackage(pkg))
	}
	if verbose {
		opts = append(opts, kernel.WithLogger(slog.New(slog.NewTextHandler(os.Stderr, nil))))
	}
	k, err := kernel.Fetch(ctx, dir, opts...)
	if err != nil {
		return err
	}
	fmt.Println(k.Dir)
	return nil
}
