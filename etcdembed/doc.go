// Package etcdembed starts embedded etcd servers: a single-member one on
// loopback for the shell, the tests and single-binary deployments (Start), and
// one member of a multi-member cluster on given URLs (StartMember), which is
// what `kvstore coordinator` runs.
//
// Lifecycle:
//
//	srv, err := etcdembed.Start(ctx, etcdembed.DefaultConfig())
//	if err != nil { ... }      // nothing is left running on error
//	defer srv.Close()          // stops etcd, waits for it, removes a temp dir
//	endpoints := []string{srv.ClientURL()}
//
// Start picks free loopback ports for the client and peer URLs, waits until
// the server is ready to serve (bounded by ctx) and never leaks a half-built
// server: on any error everything it started is stopped again.
//
// StartMember takes a MemberConfig: the Config fields plus etcd's own
// cluster settings (listen and advertised client and peer URLs, the initial
// cluster, its state and token). A member of a new multi-member cluster is
// ready only once a quorum of the members runs, so start them concurrently:
// StartMember waits until then, or until ctx ends, and on error leaves
// nothing running, just as Start does.
//
// Config.ClientTLS serves the client URLs over TLS (https), and with a CA
// file requires every client to show a certificate signed by it (etcd's
// --trusted-ca-file with --client-cert-auth); Config.PeerTLS does the same
// for the peer URLs. Start then picks https URLs; StartMember requires them.
//
// DefaultConfig is tuned for short coordinator session TTLs: a 50 ms raft
// heartbeat and a 500 ms election timeout, which make etcd's minimum lease TTL
// about one second (etcd rounds 1.5 election timeouts up to whole seconds).
//
// The package keeps no package-level mutable state: any number of servers can
// run in one process.
package etcdembed
