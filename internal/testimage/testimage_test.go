package testimage

import (
	"archive/tar"
	"bytes"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"io"
	"testing"
)

func TestSparseRoundTrip(t *testing.T) {
	b := Tar(t, []Entry{
		File("a", 0o644, "x"),
		{Header: tar.Header{Typeflag: tar.TypeReg, Name: "big", Size: 5 << 30, Mode: 0o644, ModTime: Epoch}, Sparse: []Chunk{{Offset: 4 << 30, Data: []byte("hello")}}},
		File("z", 0o644, "y"),
	})
	tr := tar.NewReader(bytes.NewReader(b))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Name == "big" {
			if h.Size != 5<<30 {
				t.Fatalf("size %d", h.Size)
			}
			buf := make([]byte, 1<<20)
			var off int64
			found := -1
			for {
				n, err := tr.Read(buf)
				if i := bytes.Index(buf[:n], []byte("hello")); i >= 0 {
					found = int(off) + i
				}
				off += int64(n)
				if err != nil {
					break
				}
			}
			if off != 5<<30 || int64(found) != 4<<30 {
				t.Fatalf("read %d bytes, data at %d", off, found)
			}
		}
	}
	if len(names) != 3 || names[1] != "big" {
		t.Fatalf("entries %q", names)
	}
}

func TestImagesValidate(t *testing.T) {
	for name, img := range map[string]v1.Image{"busybox": Busybox(t), "layered": Layered(t)} {
		t.Run(name, func(t *testing.T) {
			if err := validate.Image(img); err != nil {
				t.Fatal(err)
			}
			mt, err := img.MediaType()
			if err != nil || mt != types.OCIManifestSchema1 {
				t.Fatalf("media type %q, %v", mt, err)
			}
			layers, err := img.Layers()
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]int{"busybox": 1, "layered": 3}[name]
			if len(layers) != want {
				t.Fatalf("%d layers, want %d", len(layers), want)
			}
		})
	}
}
