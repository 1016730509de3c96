package node

import "github.com/kvstore/kvstore/clock"

// now reads the node's clock (Config.Clock), which leases, holdings and
// session deadlines are measured on.
func (n *Node) now() clock.Instant { return n.clk.Now() }
