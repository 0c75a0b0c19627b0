package build

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// stage is one FROM of a Dockerfile and what follows it.
type stage struct {
	name  string        // lower case (Docker's stage names are); "" when unnamed
	from  string        // the FROM's image, build arguments substituted
	insts []instruction // from the FROM on
	refs  []ref         // what its COPY --from and RUN --mount from= name
	vars  map[string]string
}

// ref is an image or stage reference and the instruction that names it.
type ref struct {
	name string
	in   instruction
}

// dockerfile is a parsed Dockerfile with its stages.
type dockerfile struct {
	escape byte
	stages []*stage
}

// parseStages splits a Dockerfile into its stages, with the global ARGs
// (before the first FROM: defaults, overridden by args) substituted in
// the FROM images, as Docker does.
func parseStages(src []byte, args map[string]string) (*dockerfile, error) {
	escape, insts, err := parseDockerfile(src)
	if err != nil {
		return nil, err
	}
	df := &dockerfile{escape: escape}
	global := map[string]string{}
	for _, in := range insts {
		var err error
		switch cur := df.last(); {
		case in.cmd == "from":
			err = df.addStage(in, global)
		case cur == nil && in.cmd == "arg":
			err = declare(in, escape, global, global, args)
		case cur == nil:
			err = in.errorf("%s before the first FROM: only ARG may come before it", strings.ToUpper(in.cmd))
		default:
			cur.insts = append(cur.insts, in)
			err = cur.scan(in, escape, global, args)
		}
		if err != nil {
			return nil, err
		}
	}
	if len(df.stages) == 0 {
		return nil, errors.New("the Dockerfile has no FROM")
	}
	return df, nil
}

func (df *dockerfile) last() *stage {
	if len(df.stages) == 0 {
		return nil
	}
	return df.stages[len(df.stages)-1]
}

// addStage starts the stage of a FROM [--platform=...] image [AS name].
func (df *dockerfile) addStage(in instruction, global map[string]string) error {
	_, rest := flags(in.args) // --platform: the builder's own
	words := strings.Fields(rest)
	st := &stage{insts: []instruction{in}, vars: map[string]string{}}
	switch {
	case len(words) == 3 && strings.EqualFold(words[1], "as"):
		st.name = strings.ToLower(words[2])
	case len(words) != 1:
		return in.errorf("%s: FROM takes an image and, optionally, AS and a stage name", in.text)
	}
	from, err := expander{global, df.escape}.expand(words[0])
	if err != nil {
		return in.errorf("%w", err)
	}
	if from == "" {
		return in.errorf("%s: the image is empty once the build arguments are substituted: set them in build.args", in.text)
	}
	st.from = from
	df.stages = append(df.stages, st)
	return nil
}

// declare sets the variables of an ARG name[=default] ... in vars: the
// build argument when given, else the default, else (in a stage) the
// global ARG's value.
func declare(in instruction, escape byte, vars, global, args map[string]string) error {
	x := expander{vars, escape}
	for _, word := range strings.Fields(in.args) {
		name, def, hasDef := strings.Cut(word, "=")
		switch v, given := args[name]; {
		case given:
			vars[name] = v
		case hasDef:
			v, err := x.expand(def)
			if err != nil {
				return in.errorf("%w", err)
			}
			vars[name] = v
		default:
			if v, ok := global[name]; ok {
				vars[name] = v
			}
		}
	}
	return nil
}

// scan notes the ARGs of a stage and the references of its COPY --from
// and RUN --mount=...,from=.
func (st *stage) scan(in instruction, escape byte, global, args map[string]string) error {
	if in.cmd == "arg" {
		return declare(in, escape, st.vars, global, args)
	}
	if in.cmd != "copy" && in.cmd != "run" && in.cmd != "add" {
		return nil
	}
	fl, _ := flags(in.args)
	names := fl["from"]
	for _, mount := range fl["mount"] {
		for _, kv := range strings.Split(mount, ",") {
			if k, v, _ := strings.Cut(kv, "="); strings.EqualFold(k, "from") {
				names = append(names, v)
			}
		}
	}
	for _, n := range names {
		v, err := expander{st.vars, escape}.expand(n)
		if err != nil {
			return in.errorf("%w", err)
		}
		if v == "" {
			return in.errorf("%s: from %q is empty once the build arguments are substituted", in.text, n)
		}
		st.refs = append(st.refs, ref{v, in})
	}
	return nil
}

// stageOf is the stage that name (a stage name or index) refers to, from
// a stage numbered before; -1 when name is an image.
func (df *dockerfile) stageOf(name string, before int) int {
	if i, err := strconv.Atoi(name); err == nil && i >= 0 && i < before {
		return i
	}
	for i, st := range df.stages[:before] {
		if st.name != "" && st.name == strings.ToLower(name) {
			return i
		}
	}
	return -1
}

// target is the index of the stage a build of target ends with: the
// last one when target is "".
func (df *dockerfile) target(target string) (int, error) {
	if target == "" {
		return len(df.stages) - 1, nil
	}
	var names []string
	for i, st := range df.stages {
		if st.name == strings.ToLower(target) {
			return i, nil
		}
		if st.name != "" {
			names = append(names, st.name)
		}
	}
	if len(names) == 0 {
		return 0, fmt.Errorf("target stage %q not found: the Dockerfile has no named stages (FROM image AS name)", target)
	}
	return 0, fmt.Errorf("target stage %q not found: the Dockerfile has stages %s", target, strings.Join(names, ", "))
}

// Bases are the external images a build of target (the last stage when
// "") needs, in the order the Dockerfile names them: the FROM images that
// are not an earlier stage nor scratch, and the images that COPY --from
// and RUN --mount=...,from= name, of the stages the target depends on
// only (buildah skips the others, so their images are not needed). args
// are the build arguments; the global ARGs' defaults stand for the rest.
func Bases(dockerfile []byte, args map[string]string, target string) ([]string, error) {
	df, err := parseStages(dockerfile, args)
	if err != nil {
		return nil, err
	}
	t, err := df.target(target)
	if err != nil {
		return nil, err
	}
	needed := make([]bool, len(df.stages))
	df.need(t, needed)
	var out []string
	add := func(name string) {
		if !strings.EqualFold(name, "scratch") && !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	for i, st := range df.stages {
		if !needed[i] {
			continue
		}
		if df.stageOf(st.from, i) < 0 {
			add(st.from)
		}
		for _, r := range st.refs {
			if df.stageOf(r.name, len(df.stages)) < 0 {
				add(r.name)
			}
		}
	}
	return out, nil
}

// need marks stage i and the stages it builds on or copies from.
func (df *dockerfile) need(i int, needed []bool) {
	if needed[i] {
		return
	}
	needed[i] = true
	st := df.stages[i]
	if j := df.stageOf(st.from, i); j >= 0 {
		df.need(j, needed)
	}
	for _, r := range st.refs {
		if j := df.stageOf(r.name, len(df.stages)); j >= 0 {
			df.need(j, needed)
		}
	}
}

// Stages are the names of a Dockerfile's stages, in order; "" for an
// unnamed one.
func Stages(dockerfile []byte) ([]string, error) {
	df, err := parseStages(dockerfile, nil)
	if err != nil {
		return nil, err
	}
	out := make([]string, len(df.stages))
	for i, st := range df.stages {
		out[i] = st.name
	}
	return out, nil
}

// TargetExists says whether a build's target: names a stage of the
// Dockerfile, and the stages there are when it does not.
func TargetExists(dockerfile []byte, target string) error {
	df, err := parseStages(dockerfile, nil)
	if err == nil {
		_, err = df.target(target)
	}
	return err
}
