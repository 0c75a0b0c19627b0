package supervisor

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vmcompose/vmcompose/guest/agent"
	"github.com/vmcompose/vmcompose/network"
	"github.com/vmcompose/vmcompose/reconcile"
)

// TestErrorsKeepTheirKind: an operation's error reaches the CLI with its
// message, the service at fault and the sentinel it wraps.
func TestErrorsKeepTheirKind(t *testing.T) {
	for _, sentinel := range []error{agent.ErrCommandNotFound, network.ErrPortInUse, reconcile.ErrTerminal} {
		s := NewSupervisor(t.TempDir(), nil)
		failed := &reconcile.ServiceError{Service: "web", Err: fmt.Errorf("starting: %w", sentinel)}
		srv := httptest.NewServer(s.stream(func(context.Context, *Request, func(Event)) error { return failed }))
		resp, err := http.Post(srv.URL, "application/json", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		var last Event
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			last = Event{}
			if err := json.Unmarshal(sc.Bytes(), &last); err != nil {
				t.Fatal(err)
			}
		}
		resp.Body.Close()
		srv.Close()
		got := last.Err()
		if !last.Done || last.Service != "web" || got == nil || got.Error() != failed.Error() {
			t.Errorf("final event %+v, want the failure of web", last)
		}
		if !errors.Is(got, sentinel) {
			t.Errorf("%v: errors.Is(%v) is false after the socket", sentinel, got)
		}
	}
}
