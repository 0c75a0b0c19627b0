// Package testenv tells tests what the machine running them has and where
// the repository's shared test data is: one spelling of "in CI" (where a
// missing tool fails a test instead of skipping it) and the path of the
// compose corpus in testdata/.
//
// It owns test helpers only and imports nothing but the standard library,
// so that any package's tests, and test helper packages, can use it.
package testenv
