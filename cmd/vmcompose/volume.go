package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/vmcompose/vmcompose/internal/terminal"
	"github.com/vmcompose/vmcompose/oci"
	"github.com/vmcompose/vmcompose/reconcile"
	"github.com/vmcompose/vmcompose/volume"
)

func volumeCommand() *cli.Command {
	return &cli.Command{
		Name:  "volume",
		Usage: "manage the volume store (named volumes of every project)",
		Subcommands: []*cli.Command{{
			Name:    "ls",
			Aliases: []string{"list"},
			Usage:   "list volumes",
			Flags:   []cli.Flag{formatFlag("table", "json"), &cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "only the names"}},
			Action:  runVolumeList,
		}, {
			Name:      "inspect",
			Usage:     "show volumes as JSON",
			ArgsUsage: "NAME...",
			Action:    runVolumeInspect,
		}, {
			Name:      "create",
			Usage:     "create a volume",
			ArgsUsage: "NAME",
			Flags: []cli.Flag{
				&cli.StringSliceFlag{Name: "opt", Aliases: []string{"o"}, Usage: "driver option `KEY=VALUE`: size=10g, sharing=auto|shared|disk"},
				&cli.StringSliceFlag{Name: "label", Usage: "`KEY=VALUE` label"},
			},
			Action: runVolumeCreate,
		}, {
			Name:      "rm",
			Aliases:   []string{"remove"},
			Usage:     "remove volumes no VM uses",
			ArgsUsage: "NAME...",
			Flags:     []cli.Flag{&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "remove volumes that stopped VMs refer to"}},
			Action:    runVolumeRemove,
		}, {
			Name:  "prune",
			Usage: "remove volumes no VM refers to (without --all, only those no compose project created)",
			Flags: []cli.Flag{
				&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "also volumes compose projects created"},
				&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "do not ask for confirmation"},
			},
			Action: runVolumePrune,
		}},
	}
}

// volumesCommand is docker compose's volumes: the project's volumes.
func volumesCommand() *cli.Command {
	return &cli.Command{
		Name:   "volumes",
		Usage:  "list the project's volumes",
		Flags:  []cli.Flag{formatFlag("table", "json"), &cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "only the names"}},
		Action: runProjectVolumes,
	}
}

// volumeRow is a volume as volume ls prints it, in docker's JSON fields.
type volumeRow struct {
	Driver     string `json:"Driver"`
	Name       string `json:"Name"`
	Kind       string `json:"Kind"`
	Mountpoint string `json:"Mountpoint"`
	Labels     string `json:"Labels"`
	Scope      string `json:"Scope"`
	Size       string `json:"Size"`
}

func runVolumeList(c *cli.Context) error {
	s, err := reconcile.OpenVolumes()
	if err != nil {
		return err
	}
	vols, err := s.List()
	if err != nil {
		return err
	}
	return printVolumes(c, vols)
}

func runProjectVolumes(c *cli.Context) error {
	p, err := loadProject(c)
	if err != nil {
		return err
	}
	s, err := reconcile.OpenVolumes()
	if err != nil {
		return err
	}
	var vols []volume.Volume
	for _, key := range slices.Sorted(maps.Keys(p.Volumes)) {
		if v, err := s.Get(reconcile.VolumeName(p, key)); err == nil {
			vols = append(vols, v)
		}
	}
	return printVolumes(c, vols)
}

func printVolumes(c *cli.Context, vols []volume.Volume) error {
	format, err := checkFormat(c, "table", "json")
	if err != nil {
		return err
	}
	if c.Bool("quiet") {
		for _, v := range vols {
			fmt.Fprintln(c.App.Writer, v.Name)
		}
		return nil
	}
	var rows []volumeRow
	for _, v := range vols {
		size := "N/A"
		if n, err := v.Usage(); err == nil {
			size = oci.HumanSize(n)
		}
		var labels []string
		for _, k := range slices.Sorted(maps.Keys(v.Labels)) {
			labels = append(labels, k+"="+v.Labels[k])
		}
		rows = append(rows, volumeRow{Driver: "local", Name: v.Name, Kind: string(v.Kind), Mountpoint: v.Mountpoint(),
			Labels: strings.Join(labels, ","), Scope: "local", Size: size})
	}
	if format == "json" {
		return jsonLines(c.App.Writer, rows)
	}
	w := tabwriter.NewWriter(c.App.Writer, 0, 0, 3, ' ', 0)
	fmt.Fprintln(w, "DRIVER\tVOLUME NAME\tKIND\tSIZE")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.Driver, r.Name, r.Kind, r.Size)
	}
	return w.Flush()
}

// volumeInspect is docker volume inspect's object.
type volumeInspect struct {
	CreatedAt  string            `json:"CreatedAt"`
	Driver     string            `json:"Driver"`
	Kind       string            `json:"Kind"`
	Labels     map[string]string `json:"Labels"`
	Mountpoint string            `json:"Mountpoint"`
	Name       string            `json:"Name"`
	Options    map[string]string `json:"Options"`
	Scope      string            `json:"Scope"`
}

func runVolumeInspect(c *cli.Context) error {
	if c.NArg() == 0 {
		return fmt.Errorf("volume inspect: name the volumes")
	}
	s, err := reconcile.OpenVolumes()
	if err != nil {
		return err
	}
	out := []volumeInspect{}
	for _, name := range c.Args().Slice() {
		v, err := s.Get(name)
		if err != nil {
			return err
		}
		out = append(out, volumeInspect{CreatedAt: v.CreatedAt.Format(time.RFC3339), Driver: "local", Kind: string(v.Kind),
			Labels: v.Labels, Mountpoint: v.Mountpoint(), Name: v.Name, Options: v.Options, Scope: "local"})
	}
	b, err := json.MarshalIndent(out, "", "    ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(c.App.Writer, "%s\n", b)
	return err
}

func runVolumeCreate(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("volume create: name one volume: vmcompose volume create [--opt size=10g] NAME")
	}
	name := c.Args().First()
	opts, err := volume.ParseOpts(c.StringSlice("opt"), "--opt")
	if err != nil {
		return err
	}
	labels, err := volume.ParseOpts(c.StringSlice("label"), "--label")
	if err != nil {
		return err
	}
	o, err := volume.ParseOptions(opts)
	if err != nil {
		return fmt.Errorf("volume %s: %s", name, strings.Replace(err.Error(), "driver_opts.", "--opt ", 1))
	}
	s, err := reconcile.OpenVolumes()
	if err != nil {
		return err
	}
	if _, _, err := s.Create(c.Context, name, volume.Spec{Kind: o.Kind(), Size: o.Size, Labels: labels, Options: opts}); err != nil {
		return err
	}
	fmt.Fprintln(c.App.Writer, name)
	return nil
}

func runVolumeRemove(c *cli.Context) error {
	if c.NArg() == 0 {
		return fmt.Errorf("volume rm: name the volumes")
	}
	s, err := reconcile.OpenVolumes()
	if err != nil {
		return err
	}
	for _, name := range c.Args().Slice() {
		if err := reconcile.RemoveVolume(c.Context, s, name, c.Bool("force"), localDriver); err != nil {
			return err
		}
		fmt.Fprintln(c.App.Writer, name)
	}
	return nil
}

func runVolumePrune(c *cli.Context) error {
	if !c.Bool("force") && terminal.IsTerminal(os.Stdin) {
		what := "volumes no compose project created"
		if c.Bool("all") {
			what = "all volumes"
		}
		fmt.Fprintf(c.App.ErrWriter, "WARNING! This will remove %s that no VM refers to.\nAre you sure you want to continue? [y/N] ", what)
		answer, _ := bufio.NewReader(os.Stdin).ReadString('\n')
		if a := strings.TrimSpace(strings.ToLower(answer)); a != "y" && a != "yes" {
			return nil
		}
	}
	s, err := reconcile.OpenVolumes()
	if err != nil {
		return err
	}
	removed, freed, err := reconcile.PruneVolumes(c.Context, s, c.Bool("all"), localDriver)
	if len(removed) > 0 {
		fmt.Fprintln(c.App.Writer, "Deleted Volumes:")
		for _, name := range removed {
			fmt.Fprintln(c.App.Writer, name)
		}
		fmt.Fprintln(c.App.Writer)
	}
	fmt.Fprintf(c.App.Writer, "Total reclaimed space: %s\n", oci.HumanSize(freed))
	return err
}
