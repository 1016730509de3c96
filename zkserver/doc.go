// Package zkserver starts real Apache ZooKeeper servers, from Debian's
// zookeeper package, as child processes on loopback for the tests, the shell
// and the benchmarks.
//
// Lifecycle:
//
//	zkserver.SkipIfUnavailable(t)          // in tests: skip (or fail in CI) without ZooKeeper
//	ens, err := zkserver.StartEnsemble(ctx, zkserver.DefaultConfig(), 3)
//	if err != nil { ... }                  // nothing is left running on error
//	defer ens.Close()                      // stops every JVM, waits, removes a temp dir
//	servers := ens.Servers()               // ["127.0.0.1:port", ...]
//
// Start is StartEnsemble with one server, which ZooKeeper runs in standalone
// mode; with more servers each gets a server.N line per member and a myid
// file, and they form a quorum. The JVMs of an ensemble start concurrently.
// Start and StartEnsemble pick free loopback ports (retrying if one was taken
// before ZooKeeper bound it) and wait, bounded by ctx, until every server
// answers the four-letter word "ruok" with "imok" and "srvr" reports it
// serving as standalone, leader or follower, with exactly one leader.
//
// Fault injection: Stop kills one member with SIGKILL, as a crash would;
// Restart starts it again on the same ports and data directory; WaitServing
// waits until the running members serve again (after a restart, or after the
// leader was killed and the others elect a new one).
//
// Each server is "java ... org.apache.zookeeper.server.quorum.QuorumPeerMain
// zoo.cfg", with the classpath of Debian's packages (see Classpath). Its
// stdout and stderr, which carry ZooKeeper's log, go to a log file in its
// directory (see LogFile); errors from Start quote that file's tail. On Linux
// the JVMs get SIGKILL when the process that started them dies, so a crashed
// test leaves no java behind.
//
// With Config.TLS each server also serves a secure client port
// (SecureServers) through Netty, with a PEM key store and trust store and
// ssl.clientAuth=need: clients must show a certificate signed by the CA.
// Debian's zookeeper.jar leaves netty-codec out of its manifest's class
// path, though Netty's SslHandler needs it, so the servers then run with
// NettyCodecJar added (without it every TLS connection is dropped with
// NoClassDefFoundError). The plaintext client port stays open: readiness is
// probed there. Quorum (server-to-server) TLS is not set up.
//
// DefaultConfig is tuned for short sessions: a 200 ms tick, so ZooKeeper
// accepts session timeouts from 400 ms to 4 s.
//
// The package keeps no package-level mutable state: any number of ensembles
// can run in one process.
package zkserver
