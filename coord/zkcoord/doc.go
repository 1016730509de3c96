// Package zkcoord implements coord.Coordinator on Apache ZooKeeper, through
// the github.com/go-zookeeper/zk client.
//
// # Znodes
//
// Every znode lives under Config.Prefix (default "/kvstore/default"; a
// chroot from the connect string is part of it):
//
//	members/<id>              -> RPC address; ephemeral
//	election/n_<guid>_<seq>   -> candidate id; ephemeral sequential
//	voters                    -> {"ids":[...]}; persistent, Version = data version + 1;
//	                             CreateVoters adds "unsealed":true, every later
//	                             write (SetVoters, ReplaceVoters) drops it
//	                             (coord.Voters.Unsealed)
//	cluster                   -> the cluster's name; persistent, written once by
//	                             ClaimCluster (create, or read and compare)
//	incarnation               -> the cluster record's random id; persistent, created
//	                             with cluster in one multi-op (or, for a cluster
//	                             znode created before incarnations, by the first
//	                             ClaimCluster that finds none: create, else read)
//	settings                  -> coord.Settings as JSON; persistent, created by
//	                             ClaimSettings, changed by SetSettings (versioned
//	                             setData), Version = data version + 1
//	epoch_base                -> decimal number added to every epoch (coord.WithEpochBase);
//	                             persistent, only raised (RaiseEpochBase: versioned set)
//
// # Sessions
//
// Each coord.Session is a ZooKeeper session on a connection of its own, with
// the session timeout the caller asks for as its TTL (the ensemble clamps it
// to [minSessionTimeout, maxSessionTimeout]; the negotiated value, tau, is
// read off each connect response, as is the time the connect request was
// written). Deadline is sent + tau*(1-DriftMargin) for the latest touch that
// provably reached the ensemble's leader, which alone expires sessions
// (send times and Deadline are readings of Config.Clock, clock.System() by
// default: CLOCK_BOOTTIME on Linux, which counts the time the machine
// spends suspended; after a suspend past the deadline the session ends as
// expired on resume):
//
//   - a handshake: the leader creates or revalidates the session (touching
//     it, with the timeout negotiated on that connection) after the connect
//     request was written;
//   - keep-alive k-1, once keep-alive k on the same connection is answered
//     before the deadline, if k was sent at least tau/4 after k-1's answer.
//     The keep-alive is a sync, which the server must pass to the leader. A
//     follower server reports the touches it saw only in its answer to the
//     leader's next ping, on the same connection that later carries k's
//     sync, so k-1's touch reached the leader before k's answer provided a
//     ping reached the follower in between; a follower that fails before
//     the ping loses the touch, which is why k-1's own answer proves
//     nothing.
//
// How often the leader pings (ZooKeeper 3.8, Leader.lead): it waits
// tickTime/2, then sends a ping to every follower, and loops; so pings are
// at least tickTime/2 apart (the wait, plus the loop's own work and any
// wait for the leader's lock), never at most. The follower sees k-1's
// touch before k-1's answer leaves it and forwards k's sync after k was
// sent, so the window for a ping is tau/4 plus a client round trip. The
// ensemble grants at least minSessionTimeout, 2 ticks by default, so
// tau/4 >= tickTime/2: at exactly 2 ticks the window exceeds the wait by
// only a round trip, which the loop's work and the network may eat. A ping
// that misses the window, followed by the follower's failure before the
// next one, leaves the deadline resting on a touch the leader never got:
// the last one it got may be a keep-alive period (tau/4) older, more than
// the drift margin (10% of tau) covers. Give the session 3 ticks or more
// (a quarter tick of margin; with the usual 2 s tick, a TTL of 6 s or
// more): a 2 s TTL on such an ensemble is raised to 4 s, exactly 2 ticks.
// The test servers (zkserver, 200 ms tick) grant the default 2 s as 10
// ticks: a 500 ms window for a 100 ms wait. A standalone server has no
// followers: it touches sessions itself. The client's own pings
// (go-zookeeper sends one every tau/3 whatever the traffic) touch the
// session too; nothing here counts them.
//
// Keep-alives go every tau/4, and at once after a reconnect; one unanswered
// for tau/4 turns Healthy false and drops the connection, so the client moves
// to another server while the deadline still allows. After a lost
// connection the client tries every server twice at once, then each further
// round after a pause of 50 ms, then 100 ms for about 2 s, and only then a
// second before each round (hostProvider): every server refuses clients
// while the ensemble elects a leader, and a client that paused a second came back
// after its deadline, ending a session the ensemble had kept.
//
// The connection's states map onto the session as the design requires:
// Disconnected turns Healthy false at once (the node serves on until the
// deadline passes); Expired, or a
// new session id after a reconnect, ends the session with
// coord.ErrSessionExpired (the node flushes), and further dials are refused
// at once, so the client cannot open a new session and send queued requests
// in it. If the deadline passes with no renewal, the session also ends as
// expired and its connection is closed with closeSession, whatever the
// ensemble may still think (as Curator's LOST state): a session the node was
// told is gone never comes back, so no node trusts ephemeral znodes it can no
// longer vouch for.
//
// # Election
//
// The standard recipe: a candidate creates an ephemeral sequential znode
// holding its id and leads when its znode has the lowest sequence number;
// until then it watches only its predecessor with exists, so one departure
// wakes one candidate (no herd effect). The epoch is the leader znode's
// czxid, which strictly increases from one leader to the next: a successor's
// znode was created after its predecessor's. The znode name carries a random
// guid, so a create whose answer was lost with the connection is found again
// (after a sync: once the session has moved to another server, ZooKeeper
// refuses requests still coming from the old one) instead of leaving an
// orphan candidate that would block the election until the session ends.
//
// SetVoters is fenced in one multi-op: a version check of the leader's
// election znode (it must still exist; sequential names are never reused, and
// no older candidate can appear once it won) and a setData of the record
// with the version read before (compare-and-swap).
//
// The voter record is read with a sync first, so a read through a lagging
// follower still sees every acknowledged write.
//
// # Watch
//
// Watch keeps one child watch on members/ and one on election/, and re-reads
// only the part whose watch fired. The channel holds one View and a newer
// View replaces an unread one. A watch also stops when its session ends.
//
// # Authentication and ACLs
//
// Without Config.Auth every znode is created open to anyone (world:anyone,
// all permissions). With Config.Auth ("user:password") every connection,
// the Coordinator's own and each session's, adds the credentials with
// ZooKeeper's digest scheme before it is used, and the client re-sends
// them after every reconnect before any queued request or watch; every
// znode at or under the prefix (the prefix itself, members/, election/,
// voters, cluster, epoch_base, and each member and candidate) is created with the ACL
// digest:user:base64(sha1(user:password)) and all permissions, so a client
// without the credentials can neither read nor list nor change nor delete
// any of them (ZooKeeper answers NoAuth). Parents of the prefix that New
// creates get world:anyone with READ and CREATE only: clusters with other
// credentials can create their prefixes beside it, nobody can change or
// delete the parents. A prefix whose existing znodes are still open to
// anyone (created before Auth was set) is refused by New rather than used
// unprotected. The digest scheme sends the password in the clear on the
// wire: use it with TLS.
//
// With Config.TLS every connection is TLS (to the servers' secure client
// ports), made by the dialer the client is given, so the handshake is done
// before the client speaks; the server's certificate must chain to
// Config.TLS.RootCAs and name the host dialed, and the client shows its
// certificate to a server with ssl.clientAuth. When New or NewSession gives
// up, the error says why the last connection attempt failed (a refused
// connection, an untrusted server, a refused client certificate).
//
// # Lifecycle and goroutines
//
// The client's calls take no context: each runs in a goroutine owned by the
// Coordinator, and the caller waits for it or for its ctx. Session.Close
// stops the session's goroutines and closes its connection with a
// closeSession request, so the ensemble deletes its ephemeral znodes at once.
// Coordinator.Close abandons sessions still open (their TCP connections are
// dropped without closeSession, so their znodes live until the session
// timeout, as after a crash), closes its own connection and waits for every
// goroutine.
package zkcoord
