// Package devloop applies watch batches to a project's running services:
// it turns a watch.Batch (or a rule's initial_sync listing) into one
// agent sync stream per running replica, then runs the rule's action
// (restart the service's process and those of its restart: true
// dependants, or exec a command in it), and reports one Event per batch.
// Follow attaches it to the supervisor as a watch session, so that every
// replica that boots while watched gets its synced paths whole before its
// process starts (Resync). It owns no watching (package watch) and no CLI;
// what reaches the VMs goes through the project's supervisor.
package devloop
