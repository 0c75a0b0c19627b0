package main

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/vmcompose/vmcompose/project"
)

// version is set at link time by the Makefile (-X main.version=...).
var version = ""

func newApp() *cli.App {
	return &cli.App{
		Name:                   "vmcompose",
		Usage:                  "run compose projects as lightweight Linux VMs",
		Version:                versionString(),
		HideVersion:            true,
		UseShortOptionHandling: true,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "file", Aliases: []string{"f"}, Usage: "compose configuration `FILE`s, merged in order"},
			&cli.StringFlag{Name: "project-name", Aliases: []string{"p"}, Usage: "project `NAME`"},
			&cli.StringSliceFlag{Name: "profile", Usage: "enable services of the `PROFILE`"},
			&cli.StringSliceFlag{Name: "env-file", Usage: "alternate environment `FILE`s"},
			&cli.StringFlag{Name: "project-directory", Usage: "alternate working `DIR` (default: the directory of the first compose file)"},
			&cli.StringFlag{Name: "progress", Value: "auto", Usage: "progress output: auto, tty, plain, json or quiet"},
		},
		Before: func(c *cli.Context) error {
			switch p := c.String("progress"); p {
			case "auto", "tty", "plain", "json", "quiet":
			default:
				return fmt.Errorf("--progress: %q is not a progress mode: use auto, tty, plain, json or quiet", p)
			}
			quietLoader(c.App.ErrWriter)
			return nil
		},
		Commands: append([]*cli.Command{
			configCommand(),
			planCommand(),
			pullCommand(),
			buildCommand(),
			builderCommand(),
			runCommand(),
			imagesCommand(),
			imageCommand(),
			setupCommand(),
			versionCommand(),
			upCommand(),
			downCommand(),
			psCommand(),
			logsCommand(),
			execCommand(),
			superviseCommand(),
			networkCommand(),
			volumeCommand(),
			volumesCommand(),
			watchCommand(),
		}, lifecycleCommands()...),
		ExitErrHandler: func(*cli.Context, error) {}, // main prints and exits
	}
}

// quietLoader makes compose-go's warnings (it logs through logrus) read
// like ours: "warning: ..." on stderr.
func quietLoader(w io.Writer) {
	if w == nil {
		w = os.Stderr
	}
	logrus.SetOutput(w)
	logrus.SetFormatter(lineFormatter{seen: map[string]bool{}})
}

// lineFormatter prints each distinct message once: compose-go repeats a
// warning for every place an unset variable is used.
type lineFormatter struct{ seen map[string]bool }

func (f lineFormatter) Format(e *logrus.Entry) ([]byte, error) {
	level := e.Level.String()
	if e.Level == logrus.WarnLevel {
		level = "warning"
	}
	line := level + ": " + e.Message + "\n"
	if f.seen[line] {
		return nil, nil
	}
	f.seen[line] = true
	return []byte(line), nil
}

// loadOptions maps the global flags to project options.
func loadOptions(c *cli.Context) project.Options {
	return project.Options{
		Files:      c.StringSlice("file"),
		Name:       c.String("project-name"),
		Profiles:   c.StringSlice("profile"),
		EnvFiles:   c.StringSlice("env-file"),
		ProjectDir: c.String("project-directory"),
	}
}

func loadProject(c *cli.Context) (*project.Project, error) {
	return project.Load(c.Context, loadOptions(c))
}

func versionString() string {
	v := version
	if v == "" {
		v = "dev"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	return fmt.Sprintf("%s (%s, %s/%s)", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func versionCommand() *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "show the vmcompose version",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "short", Usage: "print the version number only"},
		},
		Action: func(c *cli.Context) error {
			if c.Bool("short") {
				_, err := fmt.Fprintln(c.App.Writer, strings.Fields(versionString())[0])
				return err
			}
			_, err := fmt.Fprintf(c.App.Writer, "vmcompose version %s\n", versionString())
			return err
		},
	}
}

// formatFlag is the --format flag of commands that print text or JSON.
func formatFlag(values ...string) *cli.StringFlag {
	return &cli.StringFlag{Name: "format", Value: values[0], Usage: "output format: " + strings.Join(values, " or ")}
}

func checkFormat(c *cli.Context, values ...string) (string, error) {
	f := c.String("format")
	for _, v := range values {
		if f == v {
			return f, nil
		}
	}
	return "", fmt.Errorf("--format: %q is not a format: use %s", f, strings.Join(values, " or "))
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}
