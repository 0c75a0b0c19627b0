package main_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/vmcompose/vmcompose/internal/gencompose"
)

// BenchmarkPlanProcess times a whole `vmcompose plan` process (start,
// load, observe, plan, print) on generated projects, and `vmcompose
// version` as the floor of starting the binary, in the same run.
func BenchmarkPlanProcess(b *testing.B) {
	state := b.TempDir()
	exec1 := func(b *testing.B, args ...string) {
		if out, err := vmcompose(".", []string{"XDG_STATE_HOME=" + state}, args...).CombinedOutput(); err != nil {
			b.Fatalf("%v: %s", err, out)
		}
	}
	b.Run("version", func(b *testing.B) {
		for b.Loop() {
			exec1(b, "version")
		}
	})
	for _, n := range []int{100, 1000, 5000} {
		yaml, err := gencompose.Generate("diamond", n)
		if err != nil {
			b.Fatal(err)
		}
		file := filepath.Join(b.TempDir(), "compose.yaml")
		if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("diamond-%d", n), func(b *testing.B) {
			for b.Loop() {
				exec1(b, "-f", file, "plan")
			}
		})
	}
}
