// Package vmtest is the conformance suite every vm.Driver backend runs
// (vmtest.Run), with the test guest it boots: testinit, a static init that
// acts as its kernel command line says and reports on the console.
//
// It is for tests only. It may import vm, vm/kernel and vm/initramfs, and
// must not import compose, project or reconcile packages.
package vmtest
