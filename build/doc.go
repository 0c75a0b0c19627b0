// Package build makes the images of `build:` services. A real builder
// (Debian's buildah) runs in a builder VM, one per project, kept running
// between builds; the Dockerfile's RUN steps are untrusted code and run
// there, never on the host. This package owns the builder's image (made
// from Debian packages), the build context sent to it (.dockerignore
// honoured, only what changed resent), the base images it is given from
// vmcompose's store, and the import of the result into the store. It does
// not interpret Dockerfiles: it finds the image references a Dockerfile
// names so that the store can supply them, and leaves the rest to buildah.
package build
