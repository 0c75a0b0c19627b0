package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/vmcompose/vmcompose/planner"
	"github.com/vmcompose/vmcompose/supervisor"
)

func logsCommand() *cli.Command {
	return &cli.Command{
		Name:      "logs",
		Usage:     "show the output of the services",
		ArgsUsage: "[SERVICE...]",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new output"},
			&cli.StringFlag{Name: "tail", Aliases: []string{"n"}, Value: "all", Usage: "print the last `N` lines of each service (or all)"},
			&cli.BoolFlag{Name: "timestamps", Aliases: []string{"t"}, Usage: "print when each line was written"},
			&cli.BoolFlag{Name: "no-color", Usage: "no colours in the prefixes"},
			&cli.BoolFlag{Name: "no-log-prefix", Usage: "no service name before each line"},
		},
		Action: runLogs,
	}
}

func runLogs(c *cli.Context) error {
	tail := 0
	if t := c.String("tail"); t != "all" {
		n, err := strconv.Atoi(t)
		if err != nil || n < 0 {
			return fmt.Errorf("--tail: %q is not a number of lines or all", t)
		}
		tail = n
		if n == 0 {
			tail = -1
		}
	}
	p, dir, err := projectState(c)
	if err != nil {
		return err
	}
	for _, s := range c.Args().Slice() {
		if _, ok := p.Services[s]; !ok {
			if _, ok := p.DisabledServices[s]; !ok {
				return fmt.Errorf("no such service: %s (the project has: %v)", s, p.ServiceNames())
			}
		}
	}
	vms := logVMs(dir, c.Args().Slice())
	printer := newLogPrinter(c.App.Writer, vms, c.Bool("timestamps"), !c.Bool("no-color"))
	printer.noPrefix = c.Bool("no-log-prefix")
	type entry struct {
		vm   string
		line supervisor.LogLine
	}
	var all []entry
	next := map[string]int64{}
	for _, name := range vms {
		var lines []supervisor.LogLine
		if tail >= 0 {
			lines, next[name], err = supervisor.ReadLog(dir, name, tail)
			if err != nil {
				return err
			}
		} else {
			_, next[name], _ = supervisor.ReadLog(dir, name, 1)
		}
		for _, l := range lines {
			all = append(all, entry{name, l})
		}
	}
	slices.SortStableFunc(all, func(a, b entry) int { return a.line.Time.Compare(b.line.Time) })
	for _, e := range all {
		printer.print(e.vm, e.line)
	}
	if !c.Bool("follow") {
		return nil
	}
	followAll(c.Context, dir, c.Args().Slice(), next, printer)
	return nil
}

// followAll prints what the services' logs get until ctx ends, from the
// offsets in from (the end of what was printed) and from the start for
// the VMs that appear meanwhile (a scale-up, a recreate).
func followAll(ctx context.Context, dir string, services []string, from map[string]int64, printer *logPrinter) {
	var wg sync.WaitGroup
	following := map[string]bool{}
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		for _, name := range logVMs(dir, services) {
			if following[name] {
				continue
			}
			following[name] = true
			printer.add(name)
			wg.Add(1)
			go func() {
				defer wg.Done()
				supervisor.FollowLog(ctx, dir, name, from[name], func(l supervisor.LogLine) { printer.print(name, l) })
			}()
		}
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
		}
	}
}

// logVMs lists the VMs with a log, of the named services or all.
func logVMs(dir string, services []string) []string {
	files, _ := filepath.Glob(filepath.Join(supervisor.LogDir(dir), "*.log"))
	var out []string
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".log")
		svc, _, ok := planner.ParseInstance(name)
		if !ok || (len(services) > 0 && !slices.Contains(services, svc)) {
			continue
		}
		out = append(out, name)
	}
	return out
}

// logPrinter prints lines prefixed with their VM's name, aligned, in a
// colour per VM on a terminal.
type logPrinter struct {
	mu         sync.Mutex
	w          io.Writer
	width      int
	timestamps bool
	noPrefix   bool
	colors     map[string]string
}

var palette = []string{"36", "33", "32", "35", "34", "96", "93", "92", "95", "94"}

func newLogPrinter(w io.Writer, vms []string, timestamps, color bool) *logPrinter {
	if w == nil {
		w = os.Stdout
	}
	p := &logPrinter{w: w, timestamps: timestamps}
	if f, ok := w.(*os.File); !ok || !term.IsTerminal(int(f.Fd())) {
		color = false
	}
	if color {
		p.colors = map[string]string{}
		for i, name := range vms {
			p.colors[name] = palette[i%len(palette)]
		}
	}
	for _, name := range vms {
		p.width = max(p.width, len(name))
	}
	return p
}

// add makes room for a VM that appeared after the printer was made.
func (p *logPrinter) add(vm string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.width = max(p.width, len(vm))
	if _, ok := p.colors[vm]; !ok && p.colors != nil {
		p.colors[vm] = palette[len(p.colors)%len(palette)]
	}
}

func (p *logPrinter) print(vm string, l supervisor.LogLine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var b strings.Builder
	if !p.noPrefix {
		prefix := fmt.Sprintf("%-*s |", p.width, vm)
		if c, ok := p.colors[vm]; ok {
			prefix = "\x1b[" + c + "m" + prefix + "\x1b[0m"
		}
		b.WriteString(prefix + " ")
	}
	if p.timestamps {
		b.WriteString(l.Time.UTC().Format(time.RFC3339Nano) + " ")
	}
	b.WriteString(l.Text + "\n")
	io.WriteString(p.w, b.String())
}
