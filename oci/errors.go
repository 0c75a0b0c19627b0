package oci

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Sentinel errors. Errors returned by this package wrap them, so callers test
// with errors.Is.
var (
	// ErrTerminal marks an error that retrying cannot fix: an unknown image,
	// refused credentials, a blob whose content does not match its digest, a
	// platform the image does not have, a malformed archive.
	ErrTerminal = errors.New("terminal error")

	// ErrNotFound is wrapped when an image is unknown: to the registry (404),
	// or to the store with the pull policy "never" and for Store.Image.
	ErrNotFound = errors.New("image not found")

	// ErrUnauthorized is wrapped when the registry refuses the credentials
	// (401) or denies access to the repository (403).
	ErrUnauthorized = errors.New("unauthorized")

	// ErrPlatform is wrapped when the image has no manifest for the
	// requested platform.
	ErrPlatform = errors.New("platform not available")

	// ErrDigest is wrapped when content does not match its digest or size.
	ErrDigest = errors.New("digest mismatch")
)

// terminalError is an error that retrying cannot fix. It matches ErrTerminal
// and its kind (one of the sentinels above) with errors.Is and unwraps to its
// cause, so the underlying transport error stays reachable.
type terminalError struct {
	msg   string
	kind  error
	cause error
}

func (e *terminalError) Error() string { return e.msg }
func (e *terminalError) Unwrap() error { return e.cause }
func (e *terminalError) Is(target error) bool {
	return target == ErrTerminal || (e.kind != nil && target == e.kind)
}

// terminal returns a terminal error of the given kind (may be nil) with the
// message msg; cause may be nil.
func terminal(kind, cause error, format string, args ...any) error {
	return &terminalError{msg: fmt.Sprintf(format, args...), kind: kind, cause: cause}
}

// classify turns a registry error into a clear message: 401, 403 and 404
// become terminal errors that say what to check. Other errors pass through
// unchanged (they were retried already where that made sense).
func classify(err error) error {
	var re *retryError
	if errors.As(err, &re) {
		return re // without the url.Error around it: the image names the request
	}
	var te *transport.Error
	if !errors.As(err, &te) {
		return err
	}
	what := "manifest"
	for _, d := range te.Errors {
		switch d.Code {
		case transport.BlobUnknownErrorCode:
			what = "blob"
		case transport.NameUnknownErrorCode:
			what = "repository"
		}
	}
	switch te.StatusCode {
	case http.StatusNotFound:
		return terminal(ErrNotFound, err, "%s unknown (404): check the image name and tag", what)
	case http.StatusUnauthorized:
		return terminal(ErrUnauthorized, err, "unauthorized (401): log in to the registry (docker login) or check the credential helper")
	case http.StatusForbidden:
		return terminal(ErrUnauthorized, err, "access denied (403): the credentials do not allow pulling this repository")
	}
	return err
}
