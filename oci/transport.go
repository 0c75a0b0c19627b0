package oci

import (
	"net"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Plain HTTP policy. go-containerregistry falls back to http:// (after
// trying https://) for references whose registry is "localhost:PORT",
// "*.localhost", 127.0.0.1, ::1 or an RFC 1918 address, and for registries
// parsed with name.Insecure. vmcompose allows plain HTTP only for localhost,
// 127.0.0.0/8 and ::1, and for registries configured insecure: parseRef marks
// those name.Insecure (ggcr alone misses "localhost" without a port and
// 127.0.0.2…), and plainHTTPGuard refuses every other http:// request,
// including ggcr's RFC 1918 fallback and redirects to http:// URLs.

// parseRef parses an image reference as docker does, marking it insecure
// when its registry may use plain HTTP.
func parseRef(ref string, o *options) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, terminal(nil, err, "image reference %q: %v", ref, err)
	}
	reg := r.Context().RegistryStr()
	if isLoopback(reg) || o.insecure[strings.ToLower(reg)] {
		r, err = name.ParseReference(ref, name.Insecure)
		if err != nil {
			return nil, terminal(nil, err, "image reference %q: %v", ref, err)
		}
	}
	return r, nil
}

// isLoopback reports whether host (with or without port) is localhost,
// in 127.0.0.0/8 or ::1.
func isLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// plainHTTPGuard refuses http:// requests to hosts that are neither loopback
// nor configured insecure.
type plainHTTPGuard struct {
	inner    http.RoundTripper
	insecure map[string]bool
}

func (g *plainHTTPGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !isLoopback(req.URL.Host) &&
		!g.insecure[strings.ToLower(req.URL.Host)] && !g.insecure[strings.ToLower(req.URL.Hostname())] {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, terminal(nil, nil, "plain HTTP to %s refused: only localhost may be reached without TLS unless the registry is configured insecure", req.URL.Host)
	}
	return g.inner.RoundTrip(req)
}

var _ http.RoundTripper = (*plainHTTPGuard)(nil)
