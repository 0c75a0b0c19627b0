package planner_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/types"

	"github.com/vmcompose/vmcompose/internal/gencompose"
	"github.com/vmcompose/vmcompose/planner"
)

func generated(b *testing.B, shape string, n int) *types.Project {
	b.Helper()
	yaml, err := gencompose.Generate(shape, n)
	if err != nil {
		b.Fatal(err)
	}
	return load(b, yaml)
}

// BenchmarkPlan times planner.Up from nothing for generated projects.
// Target: 1 000 services in under 50 ms.
func BenchmarkPlan(b *testing.B) {
	for _, shape := range gencompose.Shapes {
		for _, n := range []int{100, 1000, 5000} {
			p := generated(b, shape, n)
			b.Run(fmt.Sprintf("%s-%d", shape, n), func(b *testing.B) {
				for b.Loop() {
					if _, err := planner.Up(planner.Desired{Project: p}, planner.Observed{}, planner.Options{}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkPlanGrowth reports how planning time grows from 1 000 to 5 000
// services, measured in the same run: about 5 is linear; the target is at
// most 6.
func BenchmarkPlanGrowth(b *testing.B) {
	for _, shape := range gencompose.Shapes {
		small, large := generated(b, shape, 1000), generated(b, shape, 5000)
		b.Run(shape, func(b *testing.B) {
			var ts, tl time.Duration
			for b.Loop() {
				for _, c := range []struct {
					p *types.Project
					d *time.Duration
				}{{small, &ts}, {large, &tl}} {
					start := time.Now()
					if _, err := planner.Up(planner.Desired{Project: c.p}, planner.Observed{}, planner.Options{}); err != nil {
						b.Fatal(err)
					}
					*c.d += time.Since(start)
				}
			}
			b.ReportMetric(float64(ts.Microseconds())/float64(b.N)/1000, "ms-1000")
			b.ReportMetric(float64(tl.Microseconds())/float64(b.N)/1000, "ms-5000")
			b.ReportMetric(float64(tl)/float64(ts), "ratio")
		})
	}
}
