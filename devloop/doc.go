// Package devloop applies watch batches to a project's running services:
// it turns a watch.Batch (or a rule's initial_sync listing) into one
// agent sync stream per running replica, then runs the rule's action
// (restart the service's process, or exec a command in it), and reports
// one Event per batch. It owns no watching (package watch) and no CLI;
// what reaches the VMs goes through the project's supervisor.
package devloop
