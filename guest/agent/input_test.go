package agent

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
)

// TestInputFrames: what an Input sends over a connection of its own is
// the frames the far end reads: stdin in order and then its end, a
// resize, a signal.
func TestInputFrames(t *testing.T) {
	host, far := net.Pipe()
	defer far.Close()
	in := NewInput(host)
	go func() {
		defer in.Close()
		in.Resize(40, 120)
		in.Signal("SIGINT")
		in.SendStdin(strings.NewReader("hello\nthere\n"))
	}()
	var stdin string
	var others []string
	for {
		typ, payload, err := ReadFrame(far, nil)
		if err != nil {
			break
		}
		if typ == FrameStdin {
			stdin += string(payload)
		} else {
			others = append(others, fmt.Sprintf("%d %q", typ, payload))
		}
	}
	want := fmt.Sprint([]string{
		fmt.Sprintf("%d %q", FrameResize, "\x00\x28\x00\x78"), // 40, 120
		fmt.Sprintf("%d %q", FrameSignal, "SIGINT"),
		fmt.Sprintf("%d %q", FrameStdinEOF, ""),
	})
	if stdin != "hello\nthere\n" || fmt.Sprint(others) != want {
		t.Errorf("stdin %q, other frames %v; want %q and %v", stdin, others, "hello\nthere\n", want)
	}
}

// TestReadOutput: stdout and stderr frames go where they belong until the
// exit frame; a stream that ends before it, or a frame of no known type,
// is an error.
func TestReadOutput(t *testing.T) {
	var frames bytes.Buffer
	WriteFrame(&frames, FrameStdout, []byte("out "))
	WriteFrame(&frames, FrameStderr, []byte("err"))
	WriteFrame(&frames, FrameStdout, []byte("more"))
	WriteFrame(&frames, FrameExit, []byte(`{"code":3}`))
	WriteFrame(&frames, FrameStdout, []byte("after the end"))
	var stdout, stderr bytes.Buffer
	st, err := ReadOutput(&frames, &stdout, &stderr)
	if err != nil || st.Code != 3 || stdout.String() != "out more" || stderr.String() != "err" {
		t.Errorf("status %+v, %v, stdout %q, stderr %q", st, err, stdout.String(), stderr.String())
	}

	frames.Reset()
	WriteFrame(&frames, FrameStdout, []byte("cut"))
	if _, err := ReadOutput(&frames, nil, nil); err == nil || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Errorf("a stream without an exit frame: %v", err)
	}
	frames.Reset()
	WriteFrame(&frames, 9, nil)
	if _, err := ReadOutput(&frames, nil, nil); err == nil {
		t.Error("a frame of type 9 was accepted")
	}
}
