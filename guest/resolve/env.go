package resolve

import "strings"

// DefaultPath is the PATH a process gets when neither the image nor compose
// sets one (docker's).
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Env merges environments: each layer's KEY=VALUE overrides the same KEY of
// the layers before it, keeping the first position of each key; a bare KEY
// (no "=") in a later layer removes it. PATH is added when missing.
func Env(layers ...[]string) []string {
	var keys []string
	vals := map[string]string{}
	for _, layer := range layers {
		for _, kv := range layer {
			k, v, ok := strings.Cut(kv, "=")
			if k == "" {
				continue
			}
			if !ok {
				if _, had := vals[k]; had {
					delete(vals, k)
					keys = remove(keys, k)
				}
				continue
			}
			if _, had := vals[k]; !had {
				keys = append(keys, k)
			}
			vals[k] = v
		}
	}
	if _, ok := vals["PATH"]; !ok {
		keys = append(keys, "PATH")
		vals["PATH"] = DefaultPath
	}
	env := make([]string, 0, len(keys))
	for _, k := range keys {
		env = append(env, k+"="+vals[k])
	}
	return env
}

// Lookup returns the value of key in env and whether it is there.
func Lookup(env []string, key string) (string, bool) {
	for i := len(env) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(env[i], "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

func remove(keys []string, k string) []string {
	for i, x := range keys {
		if x == k {
			return append(keys[:i], keys[i+1:]...)
		}
	}
	return keys
}
