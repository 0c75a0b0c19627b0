// Package testimage builds real OCI images in-process for tests: from
// lists of tar entries, and from the host's busybox-static binary.
//
// It owns test fixtures only. It may import go-containerregistry, the
// standard library (including testing) and internal/testenv, and must not
// import other vmcompose packages, so that any package's tests can use it.
package testimage
