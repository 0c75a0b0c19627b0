package netproc

import (
	"context"

	"github.com/vmcompose/vmcompose/network"
)

// NICsOf asks the network process for an instance's NICs, as the
// external tests need to look behind Attach.
func (n *Networks) NICsOf(ctx context.Context, instance string) ([]network.NIC, error) {
	var nics []network.NIC
	err := n.do(ctx, "GET", "/instances/"+instance, nil, &nics)
	return nics, err
}
