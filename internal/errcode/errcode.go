// Package errcode carries errors across a process boundary by the
// sentinel they wrap: the sender puts a code beside the message, the
// receiver rebuilds an error that prints the same message and matches the
// sentinel with errors.Is. The supervisor's socket and the network
// process's use it.
package errcode

import "errors"

// Table maps codes to the sentinels they stand for. Entries are checked
// in order, so a sentinel that wraps another comes before it.
type Table []Entry

// Entry is one code and its sentinel.
type Entry struct {
	Code string
	Err  error
}

// Of returns the code of the first sentinel err wraps, or "".
func (t Table) Of(err error) string {
	for _, e := range t {
		if errors.Is(err, e.Err) {
			return e.Code
		}
	}
	return ""
}

// Rebuild returns an error with msg that wraps the sentinel of code. A
// code the table does not know (from a newer peer) keeps the message.
func (t Table) Rebuild(msg, code string) error {
	if code != "" {
		for _, e := range t {
			if e.Code == code {
				return &remote{msg: msg, sentinel: e.Err}
			}
		}
	}
	return errors.New(msg)
}

// remote is an error answered by another process.
type remote struct {
	msg      string
	sentinel error
}

func (e *remote) Error() string { return e.msg }
func (e *remote) Unwrap() error { return e.sentinel }
