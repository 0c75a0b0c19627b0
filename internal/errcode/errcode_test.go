package errcode

import (
	"errors"
	"fmt"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	errBase := errors.New("base")
	errNarrow := fmt.Errorf("%w: narrow", errBase)
	errOther := errors.New("other")
	table := Table{{"narrow", errNarrow}, {"base", errBase}, {"other", errOther}}

	sent := fmt.Errorf("service %q: %w", "web", errNarrow)
	code := table.Of(sent)
	if code != "narrow" {
		t.Fatalf("code %q, want the narrower sentinel's", code)
	}
	got := table.Rebuild(sent.Error(), code)
	if got.Error() != sent.Error() {
		t.Errorf("message %q, want %q", got, sent)
	}
	if !errors.Is(got, errNarrow) || !errors.Is(got, errBase) || errors.Is(got, errOther) {
		t.Errorf("rebuilt error matches the wrong sentinels")
	}
	if table.Of(errors.New("plain")) != "" {
		t.Error("a plain error has a code")
	}
	if u := table.Rebuild("from a newer peer", "unknown"); u.Error() != "from a newer peer" || errors.Is(u, errBase) {
		t.Errorf("unknown code: %v", u)
	}
}
