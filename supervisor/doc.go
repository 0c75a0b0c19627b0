// Package supervisor is the per-project daemon: it owns the lifecycle of
// the project's service VMs (instances), their healthchecks, restart
// policies and logs, and serves the CLI on a unix socket (protocol.go).
// It decides nothing the planner decides: up, down, start, stop and
// restart observe, ask package planner and hand the plan to
// reconcile.Execute, with the supervisor's instances doing each operation.
//
// One Supervisor runs per project, as a detached process the CLI starts on
// demand (`vmcompose supervise`, setsid, stdio to supervisor.log). It holds
// the project's agent connections (the guest channel takes one client), so
// every operation that needs a guest goes through it: up, down, start,
// stop, restart, kill and exec, and for `watch` sync (files into a running
// instance, through its agent: Sync) and restart-process (the service
// process restarted in place, no VM reboot, no restart policy counting it:
// RestartProcess). A `watch` also holds a watch session open (POST
// /watch, watchers.go): while it does, an instance of a watched service
// that boots is prepared but its process held until the session synced
// its files and asked for the launch (POST /launch). ps and logs read
// files and the VM driver directly and need no supervisor.
//
// The project's state dir ($XDG_STATE_HOME/vmcompose/<project>) holds:
//
//	state.json        the instances as last seen (reconcile.State), written atomically
//	supervisor.lock   flock(2) of the running supervisor: one per project
//	start.lock        flock(2) of a CLI starting a supervisor
//	supervisor.sock   the CLI's socket (see protocol.go)
//	supervisor.log    the supervisor's log (log/slog)
//	logs/<vm>.log     each VM's service output, a timestamped line each
//	vms/<vm>/         the VM driver's folder (spec, scratch disk, sockets)
//	network.lock      the network process's files (package netproc)
//	network.sock, network.log, net/
//
// The project's virtual network runs in a process of its own (package
// netproc), which the supervisor starts on demand and watches. When it
// dies unasked, the supervisor ends the running VMs whose NICs were
// connected to the dead one (QEMU does not reconnect them); their restart
// policies then decide, as for a container that its runtime killed
// (networkLost); ps shows the loss. A VM whose network died while no
// supervisor ran is treated the same way when the next supervisor adopts
// it.
//
// `vmcompose run` boots its one-off VM in the CLI, not in the supervisor:
// the VM lives as long as the command, with the terminal attached. It asks
// the supervisor to start the service's dependencies (an up with
// Request.RunFor), joins the network process itself (netproc.Networks.AttachOneOff) and
// detaches when the command ends. Its VM lives in vms/ beside the
// instances but is none (planner.ParseInstance): the supervisor neither adopts nor
// plans it, and only counts it as a running VM before it ends the network
// process.
//
// Operations that change VMs run one at a time: a second `up` waits for
// the first, with a message, and then finds nothing left to do. A
// supervisor exits after a down that leaves no VM, after IdleExit with
// nothing running, or when a CLI of another version asks it to (POST
// /quit, after the running operation); the next command starts a new one,
// which adopts the VMs.
//
// # Imports
//
// supervisor uses the vm.Driver interface, never a backend: the CLI picks
// the backend and hands it over in a reconcile.Runtime.
package supervisor
