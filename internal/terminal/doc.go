// Package terminal hands the user's terminal to a process in a guest, as
// vmcompose run and exec do: raw mode while the process runs, so that every
// key (Ctrl-C too) reaches the guest's terminal, and the guest's terminal
// following the host's size.
//
// It knows the host's terminal only: what carries a resize to the guest is
// a Resizer (the agent's Input). It imports no vmcompose package.
package terminal
