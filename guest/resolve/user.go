package resolve

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// User is a resolved process identity.
type User struct {
	Uid, Gid uint32
	// Groups are the supplementary groups: the groups that list the user
	// by name, when the spec names no group.
	Groups []uint32
	// Home is the passwd entry's home directory, "/" without one.
	Home string
}

// LookupUser resolves compose's `user` the way docker (runc) does:
//
//   - "" is root (uid 0), with root's passwd entry if there is one.
//   - a number is always a uid, even without a passwd entry (gid 0 then);
//     a name must have a passwd entry.
//   - ":group" after either picks the primary group by gid or name (a
//     number needs no group entry; a name does) and drops the
//     supplementary groups; without it, the gid is the passwd entry's and
//     the supplementary groups are those listing the user.
//
// passwd and group may be nil when the files are missing: numbers still
// work, names do not.
func LookupUser(spec string, passwd, group io.Reader) (User, error) {
	u := User{Home: "/"}
	userArg, groupArg, _ := strings.Cut(spec, ":")
	uid, uidErr := parseID(userArg)
	gid, gidErr := parseID(groupArg)

	var users [][]string
	if passwd != nil {
		var err error
		users, err = parseColonFile(passwd, 7, func(f []string) bool {
			id, err := parseID(f[2])
			switch {
			case err != nil:
				return false
			case userArg == "":
				return id == 0
			case uidErr == nil:
				return id == uid
			default:
				return f[0] == userArg
			}
		})
		if err != nil {
			return User{}, fmt.Errorf("reading /etc/passwd: %w", err)
		}
	}
	matched := ""
	switch {
	case len(users) > 0:
		matched = users[0][0]
		u.Uid, _ = parseID(users[0][2])
		if g, err := parseID(users[0][3]); err == nil {
			u.Gid = g
		}
		if users[0][5] != "" {
			u.Home = users[0][5]
		}
	case userArg != "":
		if uidErr != nil {
			return User{}, fmt.Errorf("user %q: no such user in /etc/passwd", userArg)
		}
		u.Uid = uid
	}

	if groupArg == "" && matched == "" {
		return u, nil
	}
	var groups [][]string
	if group != nil {
		var err error
		groups, err = parseColonFile(group, 4, func(f []string) bool {
			if _, err := parseID(f[2]); err != nil {
				return false
			}
			switch {
			case groupArg == "":
				for _, m := range strings.Split(f[3], ",") {
					if strings.TrimSpace(m) == matched {
						return true
					}
				}
				return false
			case gidErr == nil:
				id, _ := parseID(f[2])
				return id == gid
			default:
				return f[0] == groupArg
			}
		})
		if err != nil {
			return User{}, fmt.Errorf("reading /etc/group: %w", err)
		}
	}
	if groupArg != "" {
		switch {
		case len(groups) > 0:
			u.Gid, _ = parseID(groups[0][2])
		case gidErr == nil:
			u.Gid = gid
		default:
			return User{}, fmt.Errorf("group %q: no such group in /etc/group", groupArg)
		}
		return u, nil
	}
	for _, g := range groups {
		id, _ := parseID(g[2])
		u.Groups = append(u.Groups, id)
	}
	return u, nil
}

func parseID(s string) (uint32, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 32)
	if err != nil {
		return 0, err
	}
	return uint32(n), nil
}

// parseColonFile returns the lines of an /etc/passwd-style file that match,
// split into at least n fields. Blank lines and comments are skipped.
func parseColonFile(r io.Reader, n int, match func([]string) bool) ([][]string, error) {
	var out [][]string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Split(line, ":")
		for len(f) < n {
			f = append(f, "")
		}
		if match(f) {
			out = append(out, f)
		}
	}
	return out, sc.Err()
}

// LookupGroups resolves compose's `group_add`: each a group name from
// /etc/group or a number (which needs no entry).
func LookupGroups(names []string, group io.Reader) ([]uint32, error) {
	if len(names) == 0 {
		return nil, nil
	}
	var entries [][]string
	if group != nil {
		var err error
		entries, err = parseColonFile(group, 4, func([]string) bool { return true })
		if err != nil {
			return nil, fmt.Errorf("reading /etc/group: %w", err)
		}
	}
	var out []uint32
next:
	for _, n := range names {
		if id, err := parseID(n); err == nil {
			out = append(out, id)
			continue
		}
		for _, e := range entries {
			if e[0] == n {
				if id, err := parseID(e[2]); err == nil {
					out = append(out, id)
					continue next
				}
			}
		}
		return nil, fmt.Errorf("group_add %q: no such group in /etc/group", n)
	}
	return out, nil
}
