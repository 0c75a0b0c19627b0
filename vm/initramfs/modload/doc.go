// Package modload is for the guest init: it reads the manifest of kernel
// modules that the initramfs carries and loads them in its order.
//
// The guest imports it, so it must stay free of host packages: only the
// standard library and golang.org/x/sys/unix.
package modload
