// Package gencompose generates compose files of a given shape and size for
// benchmarks and tests. It writes nothing itself.
package gencompose

import (
	"fmt"
	"strings"
)

// Shapes are the dependency shapes Generate knows.
var Shapes = []string{"chain", "fanout", "diamond"}

// Generate returns a compose file of n services whose depends_on form the
// given shape:
//   - chain: s1 depends on s0, s2 on s1, ... (n waves);
//   - fanout: every service depends on s0 (2 waves);
//   - diamond: s0, then pairs that both depend on the previous join, then a
//     join that depends on both (about 2n/3 waves).
//
// Every service has an image, a command, environment and a healthcheck,
// so that loading and hashing do realistic work.
func Generate(shape string, n int) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "name: gen-%s-%d\nservices:\n", shape, n)
	for i := range n {
		fmt.Fprintf(&b, "  s%d:\n    image: registry.local/app/s%d:1.0\n    command: [\"serve\", \"--port\", \"%d\"]\n", i, i%17, 8000+i%1000)
		fmt.Fprintf(&b, "    environment:\n      INDEX: \"%d\"\n      LOG_LEVEL: info\n      PEERS: s%d,s%d\n", i, (i+1)%n, (i+2)%n)
		fmt.Fprintf(&b, "    healthcheck: {test: [\"CMD\", \"true\"], interval: 5s}\n")
		deps, err := dependencies(shape, i)
		if err != nil {
			return "", err
		}
		if len(deps) > 0 {
			names := make([]string, len(deps))
			for k, d := range deps {
				names[k] = fmt.Sprintf("s%d", d)
			}
			fmt.Fprintf(&b, "    depends_on: [%s]\n", strings.Join(names, ", "))
		}
	}
	return b.String(), nil
}

func dependencies(shape string, i int) ([]int, error) {
	if i == 0 {
		return nil, nil
	}
	switch shape {
	case "chain":
		return []int{i - 1}, nil
	case "fanout":
		return []int{0}, nil
	case "diamond":
		// Indexes 3k are joins; 3k+1 and 3k+2 depend on join 3k, and join
		// 3k+3 depends on both.
		if i%3 == 0 {
			return []int{i - 2, i - 1}, nil
		}
		return []int{i - i%3}, nil
	}
	return nil, fmt.Errorf("no shape %q: use one of %s", shape, strings.Join(Shapes, ", "))
}
