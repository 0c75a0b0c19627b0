package build

import (
	"fmt"
	"regexp"
	"strings"
)

// instruction is one Dockerfile instruction.
type instruction struct {
	line int    // where it starts, from 1
	cmd  string // the keyword, lower case
	args string // what follows the keyword
	// text is the instruction as written, its continued lines joined
	// without the escape character and the line break, as buildah prints
	// it in its STEP lines.
	text string
}

func (in instruction) errorf(format string, a ...any) error {
	return fmt.Errorf("Dockerfile line %d: "+format, append([]any{in.line}, a...)...)
}

var directiveRE = regexp.MustCompile(`^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`)

// parseDockerfile splits a Dockerfile into its instructions as Docker's
// parser does: parser directives (only escape= matters here) at the top,
// comment lines dropped (inside a continued instruction too), a line
// ending in the escape character continued on the next. The bodies of
// heredocs (RUN <<EOF ... EOF) are skipped, so that their lines are not
// read as instructions.
func parseDockerfile(src []byte) (escape byte, out []instruction, err error) {
	lines := strings.Split(strings.ReplaceAll(string(src), "\r\n", "\n"), "\n")
	escape, i := '\\', 0
	for ; i < len(lines); i++ {
		m := directiveRE.FindStringSubmatch(lines[i])
		if m == nil {
			break
		}
		if strings.EqualFold(m[1], "escape") {
			if m[2] != "\\" && m[2] != "`" {
				return 0, nil, fmt.Errorf("Dockerfile line %d: escape=%s: the escape character must be \\ or `", i+1, m[2])
			}
			escape = m[2][0]
		}
	}
	for i < len(lines) {
		t := strings.TrimSpace(lines[i])
		if t == "" || t[0] == '#' {
			i++
			continue
		}
		in := instruction{line: i + 1}
		in.text, i = joinContinued(lines, i, escape)
		kw, rest := firstWord(in.text)
		in.cmd, in.args = strings.ToLower(kw), rest
		i = skipHeredocs(lines, i, in)
		out = append(out, in)
	}
	return escape, out, nil
}

// joinContinued is the instruction that starts at lines[i], with its
// continuation lines, and the index of the line after it.
func joinContinued(lines []string, i int, escape byte) (string, int) {
	var b strings.Builder
	first := true
	for i < len(lines) {
		l := lines[i]
		i++
		t := strings.TrimSpace(l)
		if !first && (t == "" || t[0] == '#') {
			continue // dropped inside a continued instruction
		}
		if first {
			l, first = strings.TrimLeft(l, " \t"), false
		}
		r := strings.TrimRight(l, " \t")
		if !strings.HasSuffix(r, string(escape)) {
			b.WriteString(l)
			break
		}
		b.WriteString(r[:len(r)-1])
	}
	return strings.TrimSpace(b.String()), i
}

var heredocRE = regexp.MustCompile(`<<(-?)(["']?)([A-Za-z_][A-Za-z0-9_]*)(["']?)`)

// skipHeredocs is the index of the line after the heredoc bodies that
// in, a RUN, COPY or ADD, starts before line i; i when it has none.
func skipHeredocs(lines []string, i int, in instruction) int {
	if in.cmd != "run" && in.cmd != "copy" && in.cmd != "add" {
		return i
	}
	for _, m := range heredocRE.FindAllStringSubmatch(in.args, -1) {
		if m[2] != m[4] {
			continue
		}
		for i < len(lines) {
			l := lines[i]
			i++
			if m[1] == "-" {
				l = strings.TrimLeft(l, "\t")
			}
			if l == m[3] {
				break
			}
		}
	}
	return i
}

// flags splits an instruction's leading --name=value flags from the rest.
func flags(args string) (map[string][]string, string) {
	out := map[string][]string{}
	for strings.HasPrefix(args, "--") {
		var word string
		word, args = firstWord(args)
		name, value, _ := strings.Cut(word[2:], "=")
		name = strings.ToLower(name)
		out[name] = append(out[name], strings.Trim(value, `"'`))
	}
	return out, args
}

// firstWord splits s at its first space or tab.
func firstWord(s string) (word, rest string) {
	j := strings.IndexAny(s, " \t")
	if j < 0 {
		return s, ""
	}
	return s[:j], strings.TrimSpace(s[j+1:])
}
