package oci

import (
	"fmt"
	"sync"
)

// EventKind says what an Event reports. The string values are part of the
// stable JSON form.
type EventKind string

const (
	// EventResolved: the reference was resolved to a manifest for the
	// platform. Digest is the manifest digest, Total the image size, Layers
	// the layer count.
	EventResolved EventKind = "resolved"
	// EventLayerStarted: a layer download started. Digest is the layer
	// digest, Total its size.
	EventLayerStarted EventKind = "layer-started"
	// EventLayerProgress: Current of Total bytes of the layer are written.
	// Sent at most every 512 KiB per layer.
	EventLayerProgress EventKind = "layer-progress"
	// EventLayerDone: the layer is verified and in the store.
	EventLayerDone EventKind = "layer-done"
	// EventLayerPresent: the layer was already in the store; nothing was
	// downloaded.
	EventLayerPresent EventKind = "layer-present"
	// EventDone: the image is recorded in the store. Digest is the manifest
	// digest, Total the image size, Current the bytes downloaded.
	EventDone EventKind = "done"
)

// Event is one progress report of Pull or Import. Ref is the full image
// reference; during Import, blob events carry the archive's path instead and
// each image recorded sends a done event with its reference. Pull sends no
// event when it does not contact the registry. Its JSON form is stable:
//
//	{"kind":"layer-progress","ref":"docker.io/library/alpine:3.20","digest":"sha256:…","current":1048576,"total":3623807}
type Event struct {
	Kind     EventKind `json:"kind"`
	Ref      string    `json:"ref"`
	Digest   string    `json:"digest,omitempty"`
	Platform string    `json:"platform,omitempty"`
	Current  int64     `json:"current,omitempty"`
	Total    int64     `json:"total,omitempty"`
	Layers   int       `json:"layers,omitempty"`
}

// String is a one-line rendering for logs and non-terminal output.
func (e Event) String() string {
	short := e.Digest
	if len(short) > 19 {
		short = short[:19]
	}
	switch e.Kind {
	case EventResolved:
		return fmt.Sprintf("%s: resolved %s (%s, %d layers, %s)", e.Ref, short, e.Platform, e.Layers, HumanSize(e.Total))
	case EventLayerStarted:
		return fmt.Sprintf("%s: %s downloading %s", e.Ref, short, HumanSize(e.Total))
	case EventLayerProgress:
		return fmt.Sprintf("%s: %s %s/%s", e.Ref, short, HumanSize(e.Current), HumanSize(e.Total))
	case EventLayerDone:
		return fmt.Sprintf("%s: %s done", e.Ref, short)
	case EventLayerPresent:
		return fmt.Sprintf("%s: %s already present", e.Ref, short)
	case EventDone:
		return fmt.Sprintf("%s: pulled %s (%s downloaded)", e.Ref, short, HumanSize(e.Current))
	}
	return fmt.Sprintf("%s: %s %s", e.Ref, e.Kind, short)
}

// HumanSize formats a byte count with decimal units, as docker does.
func HumanSize(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTPE"[exp])
}

// reporter serialises calls to the progress sink.
type reporter struct {
	mu   sync.Mutex
	sink func(Event)
	ref  string
}

func (r *reporter) send(e Event) {
	if r == nil || r.sink == nil {
		return
	}
	if e.Ref == "" {
		e.Ref = r.ref
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sink(e)
}

const progressStep = 512 << 10

// counter reports layer progress as bytes are written through it.
type counter struct {
	r       *reporter
	digest  string
	total   int64
	n, last int64
}

func (c *counter) add(n int) {
	c.n += int64(n)
	if c.n-c.last >= progressStep || (c.total > 0 && c.n == c.total) {
		c.last = c.n
		c.r.send(Event{Kind: EventLayerProgress, Digest: c.digest, Current: c.n, Total: c.total})
	}
}
