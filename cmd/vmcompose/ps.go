package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

func psCommand() *cli.Command {
	return &cli.Command{
		Name:      "ps",
		Usage:     "list the services' VMs",
		ArgsUsage: "[SERVICE...]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Aliases: []string{"a"}, Usage: "show stopped VMs too"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print only the VM names"},
			formatFlag("table", "json"),
		},
		Action: runPs,
	}
}

// psRow is one line of ps; the JSON field names are docker compose's.
type psRow struct {
	ID         string   `json:"ID"`
	Name       string   `json:"Name"`
	Image      string   `json:"Image"`
	Command    string   `json:"Command"`
	Project    string   `json:"Project"`
	Service    string   `json:"Service"`
	Created    int64    `json:"Created,omitempty"`
	State      string   `json:"State"`
	Status     string   `json:"Status"`
	Health     string   `json:"Health"`
	ExitCode   int      `json:"ExitCode"`
	Publishers []string `json:"Publishers"`
	Pid        int      `json:"Pid,omitempty"`
	StartedAt  string   `json:"StartedAt,omitempty"`
}

func runPs(c *cli.Context) error {
	format, err := checkFormat(c, "table", "json")
	if err != nil {
		return err
	}
	p, dir, err := projectState(c)
	if err != nil {
		return err
	}
	o, err := observe(c.Context, dir)
	if err != nil {
		return err
	}
	var rows []psRow
	for _, in := range o.Instances {
		if c.NArg() > 0 && !slices.Contains(c.Args().Slice(), in.Service) {
			continue
		}
		st := o.VMs[in.VM]
		row := psRow{ID: in.VM, Name: p.Name + "-" + in.VM, Image: in.Image, Command: strings.Join(in.Command, " "),
			Project: p.Name, Service: in.Service, Health: in.Health, Publishers: []string{}}
		if !st.StartedAt.IsZero() {
			row.StartedAt = st.StartedAt.UTC().Format(time.RFC3339Nano)
		}
		var notes []string
		switch {
		case st.State == "running":
			row.State, row.Pid = "running", st.Pid
			row.Status = "Up " + ago(st.StartedAt)
			if in.Health != "" {
				notes = append(notes, in.Health)
			}
			if l := in.NetworkLost; l != nil {
				notes = append(notes, "restarted: its network process died "+ago(l.At)+" ago")
			}
		case st.State == "exited" || in.Phase == "exited":
			row.State, row.Health = "exited", ""
			if in.ExitCode != nil {
				row.ExitCode = *in.ExitCode
			} else {
				row.ExitCode = -1
			}
			row.Status = fmt.Sprintf("Exited (%d) %s ago", row.ExitCode, ago(st.FinishedAt))
			if in.Signal != 0 {
				notes = append(notes, "killed: the VM's process got "+unix.SignalName(syscall.Signal(in.Signal)))
			}
			if l := in.NetworkLost; l != nil {
				notes = append(notes, "ended: its network process died; restart: "+cmp.Or(in.Restart.Mode, "no"))
			}
		default:
			row.State, row.Status = "created", "Created"
		}
		if len(notes) > 0 {
			row.Status += " (" + strings.Join(notes, ", ") + ")"
		}
		if !c.Bool("all") && row.State != "running" {
			continue
		}
		rows = append(rows, row)
	}
	if c.Bool("quiet") {
		for _, r := range rows {
			fmt.Fprintln(c.App.Writer, r.Name)
		}
		return nil
	}
	if format == "json" {
		return jsonLines(c.App.Writer, rows)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "NAME\tIMAGE\tSERVICE\tSTATUS")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.Image, r.Service, r.Status)
	}
	return tw.Flush()
}

// jsonLines prints rows as JSON lines, one object a line, as docker's
// --format json does for lists.
func jsonLines[T any](w io.Writer, rows []T) error {
	enc := json.NewEncoder(w)
	for _, r := range rows {
		if err := enc.Encode(r); err != nil {
			return err
		}
	}
	return nil
}

// ago says how long ago t was, as docker's status column does.
func ago(t time.Time) string {
	if t.IsZero() {
		return "a while"
	}
	d := time.Since(t)
	switch {
	case d < time.Second:
		return "Less than a second"
	case d < 2*time.Second:
		return "1 second"
	case d < time.Minute:
		return fmt.Sprintf("%d seconds", int(d.Seconds()))
	case d < 2*time.Minute:
		return "About a minute"
	case d < time.Hour:
		return fmt.Sprintf("%d minutes", int(d.Minutes()))
	case d < 2*time.Hour:
		return "About an hour"
	case d < 48*time.Hour:
		return fmt.Sprintf("%d hours", int(d.Hours()))
	}
	return fmt.Sprintf("%d days", int(d.Hours()/24))
}
