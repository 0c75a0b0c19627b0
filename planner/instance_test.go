package planner

import (
	"fmt"
	"testing"
)

func TestParseInstance(t *testing.T) {
	for name, want := range map[string]string{
		"web-1": "web 1", "my-app-12": "my-app 12", "web-run-1a2b3c": "", "web-run-123456": "", "keep": "", "web-0": "",
	} {
		svc, n, ok := ParseInstance(name)
		got := ""
		if ok {
			got = fmt.Sprintf("%s %d", svc, n)
		}
		if got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}
