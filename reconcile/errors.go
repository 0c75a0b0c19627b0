package reconcile

import "fmt"

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
