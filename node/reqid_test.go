package node

import (
	"strings"
	"testing"
	"testing/synctest"
)

// The ids a node makes for its own writes and the ids clients choose live
// in namespaces that never meet, whatever the node's ID: a node named "c"
// once made ids of the form "c.<incarnation>.<n>", which a client id
// "<incarnation>.<n>" (sent as "c.<incarnation>.<n>") repeats; the leader
// would take the client's write for a retry of the node's and acknowledge
// it without applying it.
func TestRequestIDNamespacesNeverMeet(t *testing.T) {
	for _, id := range []string{"c", "n", "c.x", "n1"} {
		w := newWriter(&Node{cfg: Config{ID: id}})
		own := w.requestID("")
		if !strings.HasPrefix(own, nodeReqPrefix) || strings.HasPrefix(own, clientReqPrefix) {
			t.Errorf("node %q made request id %q: want it in the nodes' namespace %q", id, own, nodeReqPrefix)
		}
		tail := strings.TrimPrefix(own, id+".")
		if got := w.requestID(tail); got == own {
			t.Errorf("node %q: client id %q travels as %q, the node's own id", id, tail, got)
		}
		if got := w.requestID(own); !strings.HasPrefix(got, clientReqPrefix) {
			t.Errorf("client id %q travels as %q: want it in the clients' namespace", own, got)
		}
	}
}

// Two lives of a node started at the same instant (a clock stepped back,
// or a simulation's virtual time) still name their writes differently:
// the incarnation is random, not the start time.
func TestRequestIDIncarnationsDifferAtTheSameInstant(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := &Node{cfg: Config{ID: "n1"}}
		a, b := newWriter(n).requestID(""), newWriter(n).requestID("")
		if a == b {
			t.Fatalf("two writers of node n1 built at the same instant both made request id %q", a)
		}
	})
}
