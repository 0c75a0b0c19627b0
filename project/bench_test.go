package project_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/vmcompose/vmcompose/internal/gencompose"
	"github.com/vmcompose/vmcompose/project"
)

// BenchmarkLoad times project.Load (compose-go parsing, interpolation,
// normalization, our consistency check and x-vm validation) of generated
// projects.
func BenchmarkLoad(b *testing.B) {
	for _, shape := range gencompose.Shapes {
		for _, n := range []int{100, 1000, 5000} {
			yaml, err := gencompose.Generate(shape, n)
			if err != nil {
				b.Fatal(err)
			}
			dir := b.TempDir()
			writeFile(b, dir, "compose.yaml", yaml)
			b.Run(fmt.Sprintf("%s-%d", shape, n), func(b *testing.B) {
				for b.Loop() {
					if _, err := project.Load(context.Background(), project.Options{WorkingDir: dir, Env: []string{}}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
