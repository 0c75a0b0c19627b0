// Package oci pulls images (go-containerregistry), keeps the shared,
// content-addressed store (an OCI image layout), imports docker save and OCI
// layout archives, and turns images into read-only ext4 root filesystem
// images without extracting anything on the host.
//
// It knows nothing about VMs or compose.
//
// # The store
//
// Open(DefaultDir()) opens the store every project shares. It is an OCI
// image layout that skopeo, crane, oras, umoci and containerd read:
//
//	oci-layout, index.json, blobs/sha256/<hex>   the layout
//	rootfs/<manifest-digest-hex>.ext4            root filesystems (package oci/rootfs)
//	index.json.lock, gc.lock                     flock files
//
// index.json holds one image manifest descriptor per reference and platform,
// named with the full reference (registry included) in both
// org.opencontainers.image.ref.name and io.containerd.image.name, with the
// platform, and with the time of the last pull (AnnotationPulledAt).
//
// # Guarantees
//
//   - Content addressed: a blob already present is never downloaded or
//     written again, whichever image or registry it comes with.
//   - Crash safe: blobs and index.json are written to a temporary file in
//     the same directory, verified, fsynced and renamed, and the directory
//     fsynced (internal/atomicfile); a failed, killed or
//     cancelled pull leaves no partial blob and no index change. Temporary
//     files of killed processes are removed by the next Open (or Prune) that
//     finds no pull running.
//   - Safe for concurrent use by goroutines and processes: index.json is
//     rewritten under an exclusive flock; pulls and imports hold gc.lock
//     shared, Prune holds it exclusively, so Prune never removes the blobs of
//     an image being written.
//   - Plain HTTP only to localhost, 127.0.0.0/8 and ::1, and to registries
//     given to WithInsecureRegistries.
//
// # Errors
//
// Errors wrap the sentinels ErrTerminal (retrying cannot help), ErrNotFound,
// ErrUnauthorized, ErrPlatform and ErrDigest; test them with errors.Is.
// Messages name the image: "pulling registry.example/foo:1: manifest unknown
// (404): check the image name and tag".
//
// The package logs nothing unless given a logger (WithLogger); progress goes
// to the WithProgress sink as Event values.
package oci
