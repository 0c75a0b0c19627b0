// Package vmtest is the conformance suite every vm.Driver backend runs
// (vmtest.Run), with the test guest it boots: testinit, a static init that
// acts as its kernel command line says and reports on the console. With a
// real service guest (vminit, an image's rootfs) in the fixtures, it also
// checks the writable layer and Stop through the agent.
//
// It is for tests only. It may import vm, vm/kernel, vm/initramfs and
// guest/agent (the host side of the control channel), and must not import
// compose, project, oci or reconcile packages.
package vmtest
