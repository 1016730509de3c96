// Package memcoord implements coord.Coordinator in memory, for tests and
// for whole-cluster simulations inside a testing/synctest bubble. It passes
// the same conformance suite (coordtest) as the etcd and ZooKeeper
// backends.
//
// # Shape
//
// A Server is the coordination service: one namespace holding sessions
// with TTLs, ephemeral membership, the election, the voter record, the
// cluster record with its incarnation, the settings and the epoch base.
// Each node connects to it with New (or Server.Connect), which returns a
// *Coordinator: one client's connection, named by Config.Name.
//
//	srv := memcoord.NewServer()
//	c1 := srv.Connect("n1")
//	c2, _ := memcoord.New(srv, memcoord.Config{Name: "n2", Clock: clk})
//
// # Semantics, as the other backends
//
//   - Revisions. Every write takes the server's next revision. An election
//     entry's epoch is the revision that created it (as etcd's create
//     revision), so epochs strictly increase; a record's Version is the
//     revision that last wrote it. The leader is the oldest entry.
//   - Sessions. NewSession opens a server session of exactly the TTL asked
//     for. The server expires it a TTL after the last keep-alive it
//     received (time.AfterFunc, on the time package), deleting its
//     membership and election entries in one change. The client sends a
//     keep-alive every TTL/3; Deadline is the send time of the last one the
//     server answered, read on Config.Clock, plus TTL*(1-DriftMargin).
//     When the deadline passes with no renewal (a cut, a suspend, a clock
//     running fast) the session ends with coord.ErrSessionExpired at once,
//     as zkcoord's does, and never comes back; a server that no longer
//     holds the session (expired, ExpireSessions, Rebuild) ends it the same
//     way at the client's next keep-alive or call, as etcdcoord's does.
//   - Healthy turns false at once when the connection is cut and true again
//     with the first keep-alive answered after it heals.
//   - Coordinator.Close leaves its sessions to expire by their TTL, as a
//     crash would (Done closes with coord.ErrSessionClosed); Session.Close
//     revokes the session on the server.
//
// # Fault hooks
//
// For a simulation, all on the Server and keyed by connection name so that
// they outlive a node's restart (a new Coordinator of the same name):
//
//   - Server.Cut(name): the connections of that name can't reach the
//     server. Their calls block until Heal or until their ctx ends; their
//     watches deliver nothing; their sessions' keep-alives stop, so each
//     session turns unhealthy at once, ends as expired when its local
//     deadline passes, and expires on the server a TTL after its last
//     keep-alive (the local deadline comes first when the clocks' rates
//     differ by less than the drift margin).
//   - Server.Heal(name): the connections reach the server again.
//   - Server.ExpireSessions(name): session loss; the server drops their
//     sessions at once.
//   - Server.Rebuild(): the coordinator loses all its data; the next
//     ClaimCluster records a new incarnation, and raw epochs start low
//     again (the epoch base is what keeps the nodes' epochs monotone).
//
// Coordinator.Cut, Heal and ExpireSessions are the same hooks for the
// Coordinator's own name.
//
// # Goroutines and time
//
// A session runs one goroutine (its keep-alive loop), plus one per Watch
// and one per Campaign in flight (which, canceled while the connection is
// cut, withdraws its candidacy once it heals); all end when the session
// ends, and Coordinator.Close and Session.Close wait for them. The session
// state and the campaign machinery are coord/internal/sessionstate's, as
// etcdcoord's and zkcoord's. The Server starts none: session expiry is a
// timer callback. Nothing polls: every wait is on a channel or a timer of the
// time package, so inside a synctest bubble (create the Server and the
// Coordinators inside it, with a Config.Clock that reads the time package)
// a 2 s TTL expires in no wall-clock time.
package memcoord
