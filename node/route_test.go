package node

import (
	"fmt"
	"testing"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/rpc"
)

// A forwarded call that reached another node than meant (another cluster
// incarnation at the leader's old address, or another node id) is retried
// once the view moves on, as over an unreachable address; a bad request,
// or one over the leader's limits, is not. Both as the refusing node returns them and after the trip over gRPC
// (docs/design.md, Cluster identity and incarnation).
func TestWrongNodeIsRetried(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{fmt.Errorf("%w: message of cluster \"default\" incarnation a reached incarnation b", kvstore.ErrWrongNode), true},
		{fmt.Errorf("%w: message for node \"n1\" reached node \"n2\"", kvstore.ErrWrongNode), true},
		{fmt.Errorf("%w: message for cluster \"other\" reached cluster \"default\"", kvstore.ErrBadRequest), false},
		{fmt.Errorf("%w: value of 500 bytes (MaxValueSize 100)", kvstore.ErrTooLarge), false},
	} {
		if got := retryable(tc.err); got != tc.want {
			t.Errorf("retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
		wire := rpc.FromStatus(rpc.ToStatus(tc.err))
		if got := retryable(wire); got != tc.want {
			t.Errorf("retryable(%v) after gRPC = %v, want %v", wire, got, tc.want)
		}
	}
}
