// Package oci pulls images (go-containerregistry), keeps the shared,
// content-addressed store (an OCI image layout), imports docker save and OCI
// layout archives, and turns images into read-only ext4 root filesystem
// images without extracting anything on the host.
//
// It knows nothing about VMs or compose.
package oci
