package rootfs

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/vmcompose/vmcompose/internal/testimage"
)

// randomLayers makes three layers of random adds, replacements, whiteouts,
// opaque markers and hard links over a small set of names, so
// that they collide often. Directory names (a, b, c), file names (f*) and
// symlink names (s*) never mix, so no path goes through a symlink and the
// model needs no symlink resolution.
func randomLayers(rng *rand.Rand) [][]testimage.Entry {
	dirPath := func() string {
		var parts []string
		for range rng.IntN(4) {
			parts = append(parts, string(rune('a'+rng.IntN(3))))
		}
		return strings.Join(parts, "/")
	}
	join := func(dir, name string) string {
		if dir == "" {
			return name
		}
		return dir + "/" + name
	}
	var layers [][]testimage.Entry
	for range 3 {
		var entries, links []testimage.Entry
		var files []string
		for range 10 + rng.IntN(40) {
			dir := dirPath()
			switch k := rng.IntN(10); {
			case k < 4:
				size := rng.IntN(3) * rng.IntN(20000)
				b := make([]byte, size)
				for i := range b {
					if rng.IntN(2) == 0 && i > size/3 {
						b[i] = byte(rng.Uint32())
					}
				}
				p := join(dir, fmt.Sprintf("f%d", rng.IntN(4)))
				e := testimage.File(p, int64(rng.IntN(0o10000)), string(b))
				e.Header.Uid, e.Header.Gid = rng.IntN(3)*1000, rng.IntN(3)*1000
				if rng.IntN(4) == 0 {
					e = testimage.WithXattr(e, "user.k"+fmt.Sprint(rng.IntN(3)), []byte(strings.Repeat("v", rng.IntN(200))))
				}
				entries = append(entries, e)
				files = append(files, p)
			case k < 6:
				if dir == "" {
					continue
				}
				entries = append(entries, testimage.Dir(dir, int64(0o700+rng.IntN(0o100))))
			case k == 6:
				entries = append(entries, testimage.Symlink(join(dir, fmt.Sprintf("s%d", rng.IntN(2))), strings.Repeat("t", 1+rng.IntN(100))))
			case k == 7:
				victim := []string{"a", "b", "c", "f0", "f1", "s0"}[rng.IntN(6)]
				entries = append(entries, testimage.Whiteout(join(dir, victim)))
			case k == 8:
				if dir == "" {
					continue
				}
				entries = append(entries, testimage.Opaque(dir))
			default:
				if len(files) == 0 {
					continue
				}
				target := files[rng.IntN(len(files))]
				link := join(dir, fmt.Sprintf("f%d", rng.IntN(4)))
				if link == target || strings.HasPrefix(target, link+"/") {
					continue
				}
				links = append(links, testimage.Hardlink(link, target))
			}
		}
		// Links go last, to files of their own layer, which nothing in the
		// layer can remove or turn into something else.
		layers = append(layers, append(entries, links...))
	}
	return layers
}

func TestBuildRandomLayers(t *testing.T) {
	n := 12
	if testing.Short() {
		n = 3
	}
	for seed := range n {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			layers := randomLayers(rand.New(rand.NewPCG(uint64(seed), 99)))
			img := testimage.Image(t, layers...)
			dst := build(t, img)
			checkAgainstModel(t, img, dst)
		})
	}
}
