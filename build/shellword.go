package build

import (
	"fmt"
	"strings"
)

// expander substitutes build arguments in a word as Docker does in FROM
// and ARG: $X, ${X}, ${X:-default}, ${X-default}, ${X:+alt}, ${X+alt},
// ${X:?message}; quotes are removed ('...' literal, "..." with
// substitution) and the escape character takes the next one literally.
// An unset variable is empty.
type expander struct {
	vars   map[string]string
	escape byte
}

func (x expander) expand(word string) (string, error) {
	var b strings.Builder
	inDouble := false
	for i := 0; i < len(word); i++ {
		c := word[i]
		switch {
		case c == x.escape && i+1 < len(word):
			if inDouble && !strings.ContainsRune(`"$`+string(x.escape), rune(word[i+1])) {
				b.WriteByte(c)
			}
			i++
			b.WriteByte(word[i])
		case c == '\'' && !inDouble:
			j := strings.IndexByte(word[i+1:], '\'')
			if j < 0 {
				return "", fmt.Errorf("%s: unterminated single quote", word)
			}
			b.WriteString(word[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			inDouble = !inDouble
		case c == '$':
			v, n, err := x.variable(word[i+1:])
			if err != nil {
				return "", fmt.Errorf("%s: %w", word, err)
			}
			b.WriteString(v)
			i += n
		default:
			b.WriteByte(c)
		}
	}
	if inDouble {
		return "", fmt.Errorf("%s: unterminated double quote", word)
	}
	return b.String(), nil
}

// variable is the value of the reference that s (what follows a $)
// starts with, and its length; a $ that starts none is itself.
func (x expander) variable(s string) (string, int, error) {
	if !strings.HasPrefix(s, "{") {
		n := nameLen(s)
		if n == 0 {
			return "$", 0, nil
		}
		return x.vars[s[:n]], n, nil
	}
	end := closingBrace(s)
	if end < 0 {
		return "", 0, fmt.Errorf("missing } in ${%s", s[1:])
	}
	inner := s[1:end]
	end++ // the }
	n := nameLen(inner)
	if n == 0 {
		return "", 0, fmt.Errorf("bad substitution ${%s}", inner)
	}
	name, op := inner[:n], inner[n:]
	v, set := x.vars[name]
	if op == "" {
		return v, end, nil
	}
	colon := strings.HasPrefix(op, ":")
	op = strings.TrimPrefix(op, ":")
	if op == "" {
		return "", 0, fmt.Errorf("bad substitution ${%s}", inner)
	}
	present := set && (!colon || v != "")
	word, err := x.expand(op[1:])
	switch {
	case err != nil:
		return "", 0, err
	case op[0] == '-' && !present, op[0] == '+' && present:
		return word, end, nil
	case op[0] == '+':
		return "", end, nil
	case op[0] == '-':
		return v, end, nil
	case op[0] == '?' && !present:
		return "", 0, fmt.Errorf("%s: %s", name, word)
	case op[0] == '?':
		return v, end, nil
	}
	return "", 0, fmt.Errorf("unsupported modifier %q in ${%s}", op[0], inner)
}

// nameLen is the length of the variable name s starts with.
func nameLen(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || i > 0 && '0' <= c && c <= '9' {
			continue
		}
		return i
	}
	return len(s)
}

// closingBrace is the index of the } that closes the { s starts with.
func closingBrace(s string) int {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '{':
			depth++
		case '}':
			if depth--; depth == 0 {
				return i
			}
		}
	}
	return -1
}
