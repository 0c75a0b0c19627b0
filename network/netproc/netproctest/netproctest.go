// Package netproctest runs a project's network process inside a test's
// own process, for the tests of packages that use netproc.Networks.
package netproctest

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/vmcompose/vmcompose/network/netproc"
)

// InProcess returns Networks whose start runs a netproc.Server of dir in
// this process, counting the starts; each server's Run result goes to
// ended.
func InProcess(dir string) (n *netproc.Networks, starts *atomic.Int64, ended chan error) {
	starts = new(atomic.Int64)
	ended = make(chan error, 10)
	n = netproc.NewNetworks(dir, nil, func(ctx context.Context) (*netproc.Child, error) {
		starts.Add(1)
		ns := netproc.NewServer(dir, nil)
		ns.Version = "test"
		go func() { ended <- ns.Run(context.Background()) }()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := n.Ping(ctx); err == nil {
				return nil, nil
			}
			time.Sleep(5 * time.Millisecond)
		}
		return nil, errors.New("no answer")
	})
	return n, starts, ended
}
