package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/vmcompose/vmcompose/oci"
)

// progress shows long work: bars on a terminal, one line per event
// otherwise. It is safe for concurrent use.
type progress interface {
	// Image reports an oci event.
	Image(e oci.Event)
	// Step reports a step that has no bytes to count, e.g. a built rootfs.
	Step(ref, msg string)
	// Build reports a line of a service's build output.
	Build(service, line string)
	// Close draws the final state.
	Close()
}

// newProgress picks the renderer for --progress: tty when auto and stderr
// is a terminal, plain lines otherwise; json writes one JSON object per
// event; quiet writes nothing.
func newProgress(c *cli.Context) progress {
	w := c.App.ErrWriter
	if w == nil {
		w = os.Stderr
	}
	mode := c.String("progress")
	if mode == "auto" {
		mode = "plain"
		if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
			mode = "tty"
		}
	}
	switch mode {
	case "quiet":
		return quietProgress{}
	case "json":
		return &jsonProgress{enc: json.NewEncoder(w)}
	case "tty":
		return newTTYProgress(w)
	}
	return &plainProgress{w: w}
}

type quietProgress struct{}

func (quietProgress) Image(oci.Event)      {}
func (quietProgress) Step(string, string)  {}
func (quietProgress) Build(string, string) {}
func (quietProgress) Close()               {}

type plainProgress struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *plainProgress) Image(e oci.Event) {
	if e.Kind == oci.EventLayerProgress {
		return // one line per layer start and end is enough in a log
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintln(p.w, e.String())
}

func (p *plainProgress) Step(ref, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "%s: %s\n", ref, msg)
}

// Build prints the builder's lines as they come, as docker's plain
// progress does.
func (p *plainProgress) Build(service, line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, "%s | %s\n", service, line)
}

func (p *plainProgress) Close() {}

type jsonProgress struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (p *jsonProgress) Image(e oci.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.enc.Encode(e)
}

func (p *jsonProgress) Step(ref, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.enc.Encode(struct {
		Kind    string `json:"kind"`
		Ref     string `json:"ref"`
		Message string `json:"message"`
	}{"step", ref, msg})
}

func (p *jsonProgress) Build(service, line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.enc.Encode(struct {
		Kind    string `json:"kind"`
		Service string `json:"service"`
		Line    string `json:"line"`
	}{"build", service, line})
}

func (p *jsonProgress) Close() {}

// ttyProgress redraws one line per image and one per layer being
// downloaded, like docker compose pull, at most every 100 ms.
type ttyProgress struct {
	mu     sync.Mutex
	w      io.Writer
	images []*ttyImage
	lines  int // lines drawn last time
	last   time.Time
}

type ttyImage struct {
	ref    string
	status string
	step   string // a build's current step
	spin   int
	total  int64
	layers map[string]*ttyLayer
	order  []string
}

type ttyLayer struct {
	current, total int64
	status         string
}

func newTTYProgress(w io.Writer) *ttyProgress { return &ttyProgress{w: w} }

func (p *ttyProgress) image(ref string) *ttyImage {
	for _, im := range p.images {
		if im.ref == ref {
			return im
		}
	}
	im := &ttyImage{ref: ref, status: "resolving", layers: map[string]*ttyLayer{}}
	p.images = append(p.images, im)
	return im
}

func (p *ttyProgress) Image(e oci.Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	im := p.image(e.Ref)
	layer := func() *ttyLayer {
		l, ok := im.layers[e.Digest]
		if !ok {
			l = &ttyLayer{}
			im.layers[e.Digest] = l
			im.order = append(im.order, e.Digest)
		}
		return l
	}
	switch e.Kind {
	case oci.EventResolved:
		im.status, im.total = fmt.Sprintf("pulling %d layers", e.Layers), e.Total
	case oci.EventLayerStarted:
		l := layer()
		l.total, l.status = e.Total, "downloading"
	case oci.EventLayerProgress:
		l := layer()
		l.current, l.total = e.Current, e.Total
	case oci.EventLayerDone:
		l := layer()
		l.current, l.status = l.total, "done"
	case oci.EventLayerPresent:
		layer().status = "already present"
	case oci.EventDone:
		im.status = fmt.Sprintf("pulled (%s downloaded)", oci.HumanSize(e.Current))
	}
	p.draw(e.Kind != oci.EventLayerProgress)
}

func (p *ttyProgress) Step(ref, msg string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	im := p.image(ref)
	if strings.HasPrefix(im.status, "pulled") {
		im.status += ", " + msg
	} else {
		im.status = msg
	}
	p.draw(true)
}

// Build shows the step a service's build is at (buildah's "STEP n/m:"
// lines, "[stage/stages] STEP n/m:" in a multi-stage build), with a
// spinner that turns with each line of the step's output.
func (p *ttyProgress) Build(service, line string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	im := p.image(service)
	if i := strings.Index(line, "STEP "); i >= 0 && (i == 0 || strings.HasPrefix(line, "[")) {
		im.step = line
	}
	im.spin++
	im.status = fmt.Sprintf("building %c %s", spinner[im.spin%len(spinner)], truncate(im.step, 100))
	p.draw(false)
}

var spinner = []rune(`|/-\`)

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func (p *ttyProgress) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.draw(true)
}

func (p *ttyProgress) draw(force bool) {
	if !force && time.Since(p.last) < 100*time.Millisecond {
		return
	}
	p.last = time.Now()
	var b strings.Builder
	if p.lines > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", p.lines) // back to the first line drawn
	}
	lines := 0
	for _, im := range p.images {
		fmt.Fprintf(&b, "\x1b[2K%s: %s\n", im.ref, im.status)
		lines++
		for _, d := range im.order {
			l := im.layers[d]
			if l.status == "done" || l.status == "already present" {
				continue // finished layers leave the screen, as in docker
			}
			fmt.Fprintf(&b, "\x1b[2K  %s %s %s/%s\n", shortDigest(d), bar(l.current, l.total, 30), oci.HumanSize(l.current), oci.HumanSize(l.total))
			lines++
		}
	}
	for i := lines; i < p.lines; i++ {
		b.WriteString("\x1b[2K\n") // clear what the previous frame drew below
	}
	if p.lines > lines {
		fmt.Fprintf(&b, "\x1b[%dA", p.lines-lines)
	}
	p.lines = lines
	io.WriteString(p.w, b.String())
}

func bar(cur, total int64, width int) string {
	filled := 0
	if total > 0 {
		filled = int(int64(width) * min(cur, total) / total)
	}
	return "[" + strings.Repeat("=", filled) + strings.Repeat(" ", width-filled) + "]"
}

func shortDigest(d string) string {
	_, hex, ok := strings.Cut(d, ":")
	if !ok {
		hex = d
	}
	return hex[:min(12, len(hex))]
}
