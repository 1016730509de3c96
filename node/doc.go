// Package node is a KVStore replica: the replicated store, the read cache,
// the leader role when elected, and the node-to-node gRPC service. The same
// Node runs in the shell, in tests (package cluster) and in a standalone
// process.
//
// # Lifecycle
//
//	n, err := node.New(cfg)   // validates cfg, binds the RPC listener
//	err = n.Start(ctx)        // bootstraps the voter record if there is none, serves RPC, opens a session
//	err = n.WaitServing(ctx)  // optional: wait until it serves and sees a leader
//	v, found, err := n.Get(ctx, "k")
//	err = n.Set(ctx, "k", "v")
//	err = n.Delete(ctx, "k")
//	err = n.Resign(ctx)       // hand leadership over (rolling restart)
//	err = n.Close(ctx)        // graceful: resigns, revokes the session, waits for goroutines
//	n.Kill()                  // crash: nothing revoked, memory abandoned
//
// Every goroutine a Node starts is stopped and awaited by Close or Kill. All
// methods are safe for concurrent use. The Coordinator in Config is not
// owned by the node.
//
// # Serving
//
// A node serves only while it can prove its coordinator session is live:
// the session's Deadline (measured on Config.Clock from when the last
// answered keep-alive was sent) is in the future. A failed keep-alive or
// a lost connection (Session.Healthy false) does not suspend it by itself:
// the deadline still holds, and a blip shorter than it ends no leadership
// and drops no cache. The moment the deadline passes the node suspends: every
// pending operation fails with kvstore.ErrPartitioned (writes that may have
// reached the leader also match kvstore.ErrOutcomeUnknown), the cache is
// dropped, and leadership ends. It resumes by itself when the session is
// healthy again, or opens a new session if the old one expired. The
// replicated store is never dropped: it is what makes writes survive.
//
// Leases, holdings and session deadlines are measured on Config.Clock, by
// default clock.System(): CLOCK_BOOTTIME on Linux, which counts the time
// the machine spends suspended (the monotonic clock does not). On resume
// from a suspend longer than the TTL the deadline has passed, and so has
// every lease measured before, at the first read. A jump watcher also
// notices the suspend within 100 ms of the resume, logs "clock jumped: the
// machine was suspended for ..." (kvstore_clock_jumps_total), and suspends
// the node until a keep-alive answered since moves the deadline.
//
// # Protocol
//
// docs/design.md states the protocol and why each rule is needed; the
// leader's files (leader.go: the role's life; takeover.go; replication.go
// and entrylog.go: the replication type; holders.go: the leaseTable type,
// holdings and leases; members.go: the voterChanges type; checkquorum.go:
// the quorumCheck type; write_leader.go and read_leader.go: its half of a
// put and a get) and every node's side
// (replica.go: the replicated state, its promise and its durable copy;
// peer_follower.go: the leader's messages; read.go and write.go: the
// paths of a get and a put; session.go and serving.go: the session and
// serving; campaign.go: the candidacy; route.go: finding the leader;
// boot.go: Start) implement it. Node itself is a thin front over these
// parts, each a type that owns its state (docs/design.md, Where it lives
// in the code). These choices go beyond the shared reference that file
// supersedes:
//
//   - Reconciliation is by snapshot. A follower whose position is not on the
//     leader's history (or is further behind than the leader's log) receives
//     the leader's whole state; the shared reference's digest-and-diff
//     is an optimisation left for later.
//   - The replication stream is the invalidation. Applying an entry drops the
//     key's cached copy if it is older, so a write waits for each holder of
//     the key to have applied it (or for the holder's lease to end) rather
//     than sending a separate invalidation message.
//   - Writes of one key are pipelined, not serialized. A write is appended
//     at once and acknowledged once it is visible: committed, and no holder
//     can still read an older copy of the key (each holder applied it or its
//     lease ended). Reads gate on the same condition: the leader serves the
//     value of a key only once its write is visible, and if a newer write of
//     the key arrived while it waited, it returns the value with no lease
//     (it was visible within the read). Visibility is monotone
//     (commits only grow; a holding older than a write is never granted
//     after it), so a write is visible no later than the next write of its
//     key. The leader records each holding with the version of the copy, and
//     forgets it only when its lease ends or the holder applied a newer write
//     of the key than the copy.
//   - The leader caches too. Its reads install the value in its own cache
//     under a lease, like a follower's; applying a write of the key drops
//     that copy first, and the copies go when the leadership ends.
//   - Concurrent misses of one key on a follower share one fetch. A read
//     that finds a fetch in flight waits for it and then looks in the cache;
//     it may not take that fetch's answer, read at the leader perhaps before
//     it began, unless the fetch started after it began.
//   - Each new leader appends a no-op entry in its epoch and serves only once
//     a majority applied it (Raft's rule for committing older entries); a
//     follower's position is (epoch of its last entry, seq), and positions
//     order the takeover's choice of the most up-to-date voter.
//   - Calls in flight to the leader follow it. A forwarded write, a fetch
//     or a voter removal that a follower sent to the leader ends the moment
//     the follower sees another leader (a view from the coordinator) or
//     promises a later epoch (the new leader's first message), and is sent
//     to the new leader: a write with its request id, which the new leader
//     applies only if no entry of an older epoch that can still commit
//     carries it. A leader that stops answering (a paused process) so holds
//     nothing past the election. A write's failure is outcome unknown only
//     if an attempt may have been applied: one that reached a leader and
//     got no answer proving it was refused before it was appended.
//   - CheckQuorum. A leader records, per voter, the send time of the last
//     Prepare or Append it answered, and steps down once no majority of
//     the voters (itself included) answered within the quorum window: one
//     lease, at least an RPC timeout plus two heartbeats. A leader cut off
//     from its peers but not from the coordinator so gives the election
//     up within about a lease instead of holding it while nothing
//     commits. Giving up leadership is always safe: the node stops
//     serving and drops its copies at once, and its successor waits out
//     the leases it granted (takeover step 4) as after any other leader.
//     It then closes its coordinator session and opens a new one a lease
//     later: its membership goes with the old session, so the successor,
//     which cannot reach it, need not wait for its Prepare (next item);
//     registered at once, the new membership could reach the successor's
//     view before its takeover reads it.
//   - Pre-vote. A node that does not lead probes the voters each
//     heartbeat (Probe) and stands for election only while a majority
//     (itself included, if it is a voter and not recovering) answered a
//     probe within the quorum window; it withdraws its candidacy when that
//     ends and stands again, at the back of the queue, when it returns. It
//     only keeps nodes out of the election: the coordinator still elects
//     and hands out epochs, so safety does not depend on it; liveness does
//     (a node that reaches a majority always stands).
//   - Takeover step 4 skips the wait for older leases when every member
//     of a view that shows the new leadership answered Prepare. A voter
//     missing from such a view had no live session registered before the
//     predecessor left the election (coord.View), so by its own deadline
//     it serves nothing from any older lease; a member that answered
//     promised the new epoch and dropped its copies. After a crash or a
//     pause of the leader the successor so serves about one session TTL
//     after the fault, not a TTL plus a lease; a member with a live
//     session that does not answer (the old leader cut from its peers, a
//     partitioned follower) still makes it wait.
//   - A failed keep-alive or a dropped coordinator connection does not
//     suspend the node while its session deadline holds (see Serving).
//   - A node answers what a caller sent it (a client call, a forwarded
//     write, fetch or removal) a little before the caller's deadline, a
//     tenth of the time left (5 ms to 250 ms), so that the caller gets the
//     node's typed answer rather than its own timeout.
//
// Reads served by a follower from cache also require that the follower has
// accepted the epoch it currently sees as the leader's: a follower that
// learns of a new leader stops serving its cache at once, before any lease
// ends.
//
// # Metrics
//
// Each Node keeps its own Prometheus metrics (names starting kvstore_) and
// hands them out with Collectors; nothing is registered globally, so several
// nodes can live in one process. Register one node's collectors in one
// registry (package ops serves it over HTTP, with Ready as the readiness
// probe). A client operation is counted by the node the client called:
// a write forwarded to the leader is counted there, not at the leader. The
// leader counts the invalidations a write needs and the writes held until a
// holder's lease ended. Cache hits and misses are the Stats counters, read
// at scrape time. Counting costs a cached read no lock and no allocation.
//
// # Faults for tests
//
// Config.Faults switches deliberate protocol bugs on. They exist only so
// that the robustness suite, or a test of the promise each breaks, can show
// it catches them; never set them elsewhere. A build with -tags nofaults
// (release binaries: deploy/Dockerfile) compiles every check of them away,
// and Config.Validate refuses a Config that sets them there.
package node
