// Package etcdcoord implements coord.Coordinator on etcd, through the
// go.etcd.io/etcd/client/v3 client.
//
// # Keys
//
// Every key lives under Config.Prefix (default "/kvstore/default/"):
//
//	members/<id>          -> RPC address, attached to the session's lease
//	election/<lease hex>  -> candidate id, attached to the session's lease
//	                         (client/v3/concurrency.Election)
//	voters                -> {"ids":[...]}, persistent; Version = ModRevision;
//	                         CreateVoters adds "unsealed":true, every later
//	                         write (SetVoters, ReplaceVoters) drops it
//	                         (coord.Voters.Unsealed)
//	cluster               -> the cluster's name, persistent; written once by
//	                         ClaimCluster (create if absent, else compare)
//	incarnation           -> the cluster record's random id, persistent; created
//	                         with cluster in one transaction (or, for a cluster
//	                         key written before incarnations, by the first
//	                         ClaimCluster that finds none: create if absent)
//	settings              -> coord.Settings as JSON, persistent; created by
//	                         ClaimSettings, changed by SetSettings (CAS on
//	                         ModRevision)
//	epoch_base            -> decimal number added to every epoch (coord.WithEpochBase),
//	                         persistent; only raised (RaiseEpochBase, a CAS on ModRevision)
//
// The leader is the election key with the lowest create revision; its create
// revision is the epoch, which therefore strictly increases from one leader to
// the next. SetVoters is fenced: its transaction succeeds only while this
// session's election key still exists with that create revision and no older
// candidate key exists.
//
// # Session liveness
//
// A session is an etcd lease. The session grants the lease itself and runs
// its own keep-alive loop: every TTL/6 it records the send time and calls
// KeepAliveOnce, which gets TTL/6 (at least 500 ms) to be answered. (etcd's
// own client renews every TTL/3; a sixth leaves a 2 s session 1.47 s rather
// than 1.13 s, in the worst case, to ride out an etcd leader election.) On
// success Deadline becomes send time + TTL*(1-DriftMargin), with the TTL
// from the response; on ErrLeaseNotFound the session is expired (Done
// closes, Err is coord.ErrSessionExpired); on any other failure Healthy
// turns false, Deadline stays, and the loop retries 150 ms after the failed
// send (at once after one that went unanswered: the client sends it to the
// next member). A lost gRPC connection also turns Healthy false at once, and a restored one triggers an
// immediate keep-alive. The concurrency.Session wrapped around the lease (the
// election needs one) runs the client's own KeepAlive stream as well; that only
// helps keep the lease, it never moves Deadline.
//
// Send times and Deadline are readings of Config.Clock (clock.System() by
// default: CLOCK_BOOTTIME on Linux), which counts the time the machine
// spends suspended: after a suspend longer than the TTL the deadline has
// passed on resume, and only a keep-alive sent after it can move it again.
//
// The drift margin assumes the local clock and the etcd leader's clock run at
// rates that differ by less than DriftMargin over one TTL.
//
// # Election and watch
//
// Campaign puts the election key as concurrency.Election.Campaign does, then
// waits for every older key to go: it reads the youngest older key and
// watches it, for at most 500 ms a watch, then reads again. It runs in a
// goroutine owned by the session, so it returns promptly when its ctx or the session ends even while
// the connection is down; a candidacy nobody waits for any more is withdrawn
// by that goroutine. A won Campaign is checked (the key must still exist)
// before it is reported.
//
// Watch reads the whole prefix, sends a complete View, then follows an etcd
// watch from the next revision and sends a complete View after every change
// of members or leader. A broken watch (compaction, lost etcd leader) is
// re-established from a fresh read with backoff, and so is a watch that does
// not answer a progress request (sent every 250 ms) within 750 ms.
//
// # A member that stops answering
//
// A paused or frozen etcd member keeps its connections open, and grpc-go
// pings a connection no more often than every 10 s. So every call that is
// safe to repeat (reads, the grant, the registration, the election's put
// and deletes, the revoke) is made in attempts of at most 500 ms, each
// watch gets a gRPC stream of its own (distinct metadata), and the watches
// check their progress as above. Calls that are not safe to repeat
// (SetVoters and the other compare-and-swaps) are bounded only by their
// caller's context.
//
// Each attempt and each new stream goes to the next member in turn, but
// not to a member marked stalled (stall.go): one to which a call ended at
// its deadline having received nothing, on which a watch stopped making
// progress, or on which a campaign's watch was not even created in 500 ms. Plain round robin, the etcd
// client's own policy, kept sending such a member every third call, and a
// caller that calls at a steady pace could land on it every time. A
// marked member is probed with a linearizable read every 250 ms and
// unmarked when it answers (a Status, which the member answers alone,
// would take back a member whose reads hang), or when any call to it
// succeeds. If every member is marked,
// calls go to all of them in turn. The channel holds one View
// and a newer View replaces an unread one, so a slow reader never blocks the
// watch and always gets the latest. A watch also stops when its session ends.
//
// # TLS
//
// With Config.TLS every connection to etcd is TLS: the server's certificate
// must chain to Config.TLS.RootCAs and name the host dialed, and the client
// shows Config.TLS's certificate to a server that asks for one (etcd's
// --client-cert-auth). An http:// endpoint with Config.TLS is refused by
// Validate, since the etcd client would quietly use plaintext for it. When
// New cannot reach etcd, it makes a TLS handshake of its own with the first
// endpoint and adds what went wrong to the error: an untrusted server, a
// missing or refused client certificate, or a server that wants TLS from a
// client configured without it. The etcd client itself only reports the
// deadline.
//
// # Lifecycle and goroutines
//
// New dials and checks that etcd answers. Every goroutine is owned: the
// connection-state watcher by the Coordinator; one keep-alive loop per
// session, one per Watch and one per Campaign in flight by their session and
// the Coordinator. Session.Close stops and waits for the session's goroutines
// (bounded by its ctx), and Coordinator.Close closes the client, which ends
// whatever is left, and waits for all of them. Coordinator.Close does not
// revoke sessions: their leases expire by TTL, as after a crash.
package etcdcoord
