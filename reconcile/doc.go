// Package reconcile observes what runs, executes plans made by package
// planner, waits for dependency conditions and applies restart policies.
// It makes no decisions that belong to the planner.
package reconcile
