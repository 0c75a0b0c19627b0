package reconcile

import (
	"errors"
	"fmt"

	"github.com/vmcompose/vmcompose/guest/agent"
)

// ServiceError is an error of one service, so that the CLI can name it and
// show its log.
type ServiceError struct {
	Service string
	Err     error
}

func (e *ServiceError) Error() string { return fmt.Sprintf("service %q: %v", e.Service, e.Err) }
func (e *ServiceError) Unwrap() error { return e.Err }

// ServiceErrorf is a ServiceError of service with a formatted error.
func ServiceErrorf(service string, format string, args ...any) error {
	return &ServiceError{Service: service, Err: fmt.Errorf(format, args...)}
}

// ErrTerminal marks errors that retrying cannot fix: a spec the guest
// refuses, a guest that cannot boot its root, an image that is not there.
// The supervisor does not restart an instance that failed with one, as
// controller-runtime's TerminalError stops requeueing.
var ErrTerminal = errors.New("retrying cannot help")

// Terminal marks err as one that retrying cannot fix. Its message is err's;
// errors.Is sees both err's sentinels and ErrTerminal.
func Terminal(err error) error {
	if err == nil {
		return nil
	}
	return &terminalError{err}
}

type terminalError struct{ err error }

func (e *terminalError) Error() string   { return e.err.Error() }
func (e *terminalError) Unwrap() []error { return []error{e.err, ErrTerminal} }

// GuestRefusal is the guest's refusal of a request within err (a spec it
// cannot apply, a command that is not there), as a terminal error that
// says the guest's message alone and keeps its sentinel; nil when err
// holds no answer of the guest.
func GuestRefusal(err error) error {
	var ge *agent.GuestError
	if !errors.As(err, &ge) {
		return nil
	}
	return Terminal(&refusal{ge})
}

type refusal struct{ ge *agent.GuestError }

func (r *refusal) Error() string { return r.ge.Msg }
func (r *refusal) Unwrap() error { return r.ge }
