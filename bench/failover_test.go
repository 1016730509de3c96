package bench

import (
	"context"
	"testing"
	"time"

	"github.com/kvstore/kvstore/cluster"
)

func TestFailover(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Failover(ctx, 1, cluster.Etcd, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A killed leader's session must expire (TTL 2 s) before another is
	// elected; the holder-down write waits at most one lease (2 s, plus
	// the drift allowance) beyond its own commit.
	if k := res.KillToWrite; k.Min <= 0 || k.Max > 15*time.Second {
		t.Errorf("kill to write: %v", k)
	}
	if h := res.HolderDownWrite; h.Min <= 0 || h.Max > 5*time.Second {
		t.Errorf("holder-down write: %v", h)
	}
	t.Logf("kill to write %v; holder-down write %v", res.KillToWrite, res.HolderDownWrite)
}
