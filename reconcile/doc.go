// Package reconcile observes what runs and executes plans made by package
// planner: Observe and ObserveVMs read the recorded state (state.json)
// against the VM driver, Execute carries a plan out in dependency order
// through an Executor (the supervisor) and waits for the depends_on
// conditions on the way, and a Runtime prepares and boots the VM of one
// service (image, root filesystem, kernel, volumes, the guest's spec). It
// makes no decisions that belong to the planner, and it is not the daemon
// that runs the plans (package supervisor). It maps compose's volumes onto
// the volume store (package volume): names, labels, the images of earlier
// versions moved in, who uses a volume (the VMs' specs), down -v, and a
// disk volume made shared when the plan says so (ShareVolume).
//
// # Level, not events
//
// Observe (ObserveVMs) trusts the VM driver over state.json: a recorded
// instance whose VM is gone is dropped, a VM the record lacks is planned for
// replacement, and running means the VMM process runs. A new supervisor
// adopts the VMs that run (the driver checks pid and start time), re-attaches
// their logs where the log file ends, and restarts the ones that died
// unsupervised when their restart policy says so.
//
// # Imports
//
// reconcile uses the vm.Driver interface, never a backend: the CLI picks
// the backend and hands it over in a Runtime. It knows nothing of the
// supervisor or the CLI.
package reconcile
