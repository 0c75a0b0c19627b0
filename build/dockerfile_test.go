package build

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const multiStage = `# syntax=docker/dockerfile:1
ARG GO=1.22
ARG REG
FROM --platform=$BUILDPLATFORM golang:${GO}-alpine AS build
RUN --mount=type=cache,target=/root/.cache,from=cachebase:1 \
    go build -o /out .

FROM node:20 AS unused
COPY --from=tools:latest /x /y

FROM ${REG:-docker.io/library}/debian:${DEB:-bookworm} AS runtime

FROM runtime AS final
COPY --from=build /out /app
COPY --from=0 /a /b
copy --from=busybox:musl /bin/sh /sh
RUN --mount=type=bind,from=golang:1.22-alpine,target=/g true
`

func TestBases(t *testing.T) {
	for _, c := range []struct {
		name, dockerfile, target string
		args                     map[string]string
		want                     []string
	}{
		{"one stage", "FROM alpine:3.20\nRUN true\n", "", nil, []string{"alpine:3.20"}},
		{"last stage", multiStage, "", nil,
			[]string{"golang:1.22-alpine", "cachebase:1", "docker.io/library/debian:bookworm", "busybox:musl"}},
		{"args override the defaults", multiStage, "", map[string]string{"GO": "1.23", "REG": "r.example", "DEB": "trixie"},
			[]string{"golang:1.23-alpine", "cachebase:1", "r.example/debian:bookworm", "busybox:musl", "golang:1.22-alpine"}},
		{"target of its own", multiStage, "unused", nil, []string{"node:20", "tools:latest"}},
		{"target by name, any case", multiStage, "BUILD", nil, []string{"golang:1.22-alpine", "cachebase:1"}},
		{"scratch", "FROM scratch\nCOPY a /\n", "", nil, nil},
		{"alternative value", "ARG X=1\nFROM img${X:+-alt}\n", "", nil, []string{"img-alt"}},
		{"alternative value, empty arg", "ARG X=1\nFROM img${X:+-alt}\n", "", map[string]string{"X": ""}, []string{"img"}},
		{"a stage's ARG takes the global value", "ARG IMG=x:1\nFROM a\nARG IMG\nCOPY --from=$IMG / /\n", "", nil,
			[]string{"a", "x:1"}},
		{"heredocs, comments, continuations", "# escape=`\nFROM alpine AS a\nRUN <<EOF\nFROM evil:1\nEOF\n" +
			"RUN echo `\n# FROM evil:2\nFROM evil:4\nCOPY <<-X /f\n\tFROM evil:3\n\tX\n", "", nil, []string{"alpine"}},
		{"a heredoc with <<- ends at its tab-indented word", "FROM a\nRUN <<-X\n\tFROM evil\n\tX\nFROM b\n", "", nil, []string{"b"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := Bases([]byte(c.dockerfile), c.args, c.target)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("Bases = %q, want %q", got, c.want)
			}
		})
	}
}

func TestBasesErrorsSayTheLine(t *testing.T) {
	for dockerfile, want := range map[string]string{
		"FROM alpine\nFROM\n":                   "Dockerfile line 2: FROM: FROM takes an image",
		"\nRUN true\nFROM alpine\n":             "Dockerfile line 2: RUN before the first FROM",
		"ARG B\nFROM $B\n":                      "Dockerfile line 2: FROM $B: the image is empty",
		"FROM a AS b c\n":                       "Dockerfile line 1: FROM a AS b c: FROM takes an image",
		"FROM a\n\nCOPY --from=${X:?unset} /\n": "Dockerfile line 3: ${X:?unset}: X: unset",
		"FROM ${X\n":                            "Dockerfile line 1: ${X: missing }",
		"# comment\n":                           "the Dockerfile has no FROM",
	} {
		_, err := Bases([]byte(dockerfile), nil, "")
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Bases(%q): %v, want an error starting %q", dockerfile, err, want)
		}
	}
}

func TestStagesAndTarget(t *testing.T) {
	names, err := Stages([]byte(multiStage))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"build", "unused", "runtime", "final"}; !slices.Equal(names, want) {
		t.Errorf("Stages = %q, want %q", names, want)
	}
	if err := TargetExists([]byte(multiStage), "final"); err != nil {
		t.Error(err)
	}
	err = TargetExists([]byte(multiStage), "nope")
	if want := `target stage "nope" not found: the Dockerfile has stages build, unused, runtime, final`; err == nil || err.Error() != want {
		t.Errorf("TargetExists(nope): %v, want %s", err, want)
	}
	if _, err := Bases([]byte("FROM a\nFROM b\n"), nil, "x"); err == nil || !strings.Contains(err.Error(), "no named stages") {
		t.Errorf("Bases with a target and no named stages: %v", err)
	}
}

func TestExpand(t *testing.T) {
	x := expander{map[string]string{"X": "x", "E": ""}, '\\'}
	for in, want := range map[string]string{
		"$X":          "x",
		"a${X}b":      "axb",
		"${X:-d}":     "x",
		"${U:-d}":     "d",
		"${E:-d}":     "d",
		"${E-d}":      "",
		"${U-$X}":     "x",
		"${X:+a}":     "a",
		"${U:+a}":     "",
		"${E+a}":      "a",
		"$U":          "",
		"'$X'":        "$X",
		`"$X y"`:      "x y",
		`\$X`:         "$X",
		`"\$X\a"`:     `$X\a`,
		"a$":          "a$",
		"$1":          "$1",
		"${X:-${U}}z": "xz",
	} {
		got, err := x.expand(in)
		if err != nil || got != want {
			t.Errorf("expand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestParseKeepsLinesAndText(t *testing.T) {
	src := "# syntax=docker/dockerfile:1\n\nFROM a\nRUN echo one && \\\n  # note\n\n    echo two\n  run  lower\n"
	_, insts, err := parseDockerfile([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, in := range insts {
		got = append(got, strings.Join([]string{strconv.Itoa(in.line), in.cmd, in.text}, "|"))
	}
	want := []string{"3|from|FROM a", "4|run|RUN echo one &&     echo two", "8|run|run  lower"}
	if !slices.Equal(got, want) {
		t.Errorf("parsed %q, want %q", got, want)
	}
}

// The outputs in testdata are buildah 1.28's own (see testdata/README.md).
func TestFailedStep(t *testing.T) {
	for _, c := range []struct {
		name  string
		line  int
		instr string
		code  int
	}{
		{"single", 3, "RUN echo about to fail &&     exit 3", 3},
		{"multi", 9, "RUN sh -c 'echo failing in the last stage; exit 3'", 3},
		{"unused", 9, `RUN echo "failing in a middle stage" &&     false &&     echo never`, 1},
		{"json", 3, `RUN ["sh", "-c", "echo json form; exit $CODE"]`, 3},
		{"copy", 3, "COPY missing.txt /missing.txt", 0},
	} {
		out, err := os.ReadFile(filepath.Join("testdata", c.name+".out"))
		if err != nil {
			t.Fatal(err)
		}
		df, err := os.ReadFile(filepath.Join("testdata", c.name+".Dockerfile"))
		if err != nil {
			t.Fatal(err)
		}
		line, instr, code, ok := FailedStep(out, df, nil)
		if !ok || line != c.line || instr != c.instr || code != c.code {
			t.Errorf("%s: FailedStep = %d, %q, %d, %v; want %d, %q, %d, true", c.name, line, instr, code, ok, c.line, c.instr, c.code)
		}
		if !strings.Contains(string(out), ": "+instr+"\n") {
			t.Errorf("%s: buildah printed no step %q", c.name, instr)
		}
	}
	ok := "STEP 1/2: FROM docker-archive:/b.tar\nSTEP 2/2: RUN true\nCOMMIT\n"
	if _, _, _, found := FailedStep([]byte(ok), []byte("FROM docker-archive:/b.tar\nRUN true\n"), nil); found {
		t.Error("FailedStep found a failed step in a build that succeeded")
	}
}
