package zkserver

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// RequireEnv names the environment variable that turns SkipIfUnavailable's
// skip into a failure when it is non-empty. CI sets it so that the ZooKeeper
// tests always run there.
const RequireEnv = "KVSTORE_REQUIRE_ZOOKEEPER"

// DebianPackage is the Debian package that provides the ZooKeeper server
// (its dependency libzookeeper-java holds the jars).
const DebianPackage = "zookeeper"

// MainClass is the Java class each server runs: ZooKeeper's quorum peer
// entry point, which also runs a standalone server when the configuration
// lists no quorum.
const MainClass = "org.apache.zookeeper.server.quorum.QuorumPeerMain"

// Classpath is the Java classpath the servers run with: Debian's jars.
// zookeeper.jar's manifest Class-Path brings in its other dependencies
// (zookeeper-jute, netty, slf4j-api, ...) but no slf4j binding: Debian's
// ZooKeeper 3.8 logs through log4j 1.2, not logback, so the slf4j binding for
// log4j 1.2 and log4j itself are added.
const Classpath = "/usr/share/java/zookeeper.jar:" +
	"/usr/share/java/zookeeper-jute.jar:" +
	"/usr/share/java/slf4j-log4j12.jar:" +
	"/usr/share/java/log4j-1.2.jar"

// Available reports whether ZooKeeper servers can be started here: nil if
// the java binary is on PATH and Debian's ZooKeeper jars are installed, else
// an error that says which is missing and how to install it.
func Available() error {
	_, err := javaPath()
	return err
}

// javaPath checks the prerequisites and returns the java binary to run.
func javaPath() (string, error) {
	for _, j := range strings.Split(Classpath, ":") {
		if _, err := os.Stat(j); err != nil {
			return "", fmt.Errorf("zkserver: ZooKeeper is not installed (install the Debian package: apt-get install %s): %w", DebianPackage, err)
		}
	}
	java, err := exec.LookPath("java")
	if err != nil {
		return "", fmt.Errorf("zkserver: no java for ZooKeeper (install the Debian package, which pulls in a JRE: apt-get install %s): %w", DebianPackage, err)
	}
	return java, nil
}

// SkipIfUnavailable skips the test when Available reports an error, with
// that error as the message. If the environment variable named by RequireEnv
// is non-empty, it fails the test instead, with the same message and a note
// naming the variable.
func SkipIfUnavailable(t testing.TB) {
	t.Helper()
	skipOrFail(t, Available(), os.Getenv(RequireEnv) != "")
}

// skipOrFail is SkipIfUnavailable with the availability error and the
// requirement passed in.
func skipOrFail(t testing.TB, err error, required bool) {
	t.Helper()
	if err == nil {
		return
	}
	if required {
		t.Fatalf("%v (%s is set, so ZooKeeper is required)", err, RequireEnv)
	} else {
		t.Skip(err.Error())
	}
}

// Config configures the servers of an ensemble. The zero value is not valid;
// start from DefaultConfig.
type Config struct {
	// Dir is the directory holding each server's configuration, data and
	// log, in one subdirectory per server. If empty, Start creates a
	// temporary directory and Close removes it; a given Dir is kept.
	Dir string
	// TickTime is ZooKeeper's basic time unit, a positive whole number of
	// milliseconds. Session timeouts are clamped to [2, 20] ticks.
	TickTime time.Duration
	// InitLimit is how many ticks a follower may take to connect to and
	// sync with the leader. At least 1.
	InitLimit int
	// SyncLimit is how many ticks a follower may lag behind the leader
	// before it is dropped. At least 1.
	SyncLimit int
	// ForceSync makes ZooKeeper fsync its transaction log before it
	// acknowledges a write (ZooKeeper's default). False trades durability
	// across machine crashes for speed; a killed process loses nothing
	// either way.
	ForceSync bool
	// MaxHeapMB is each JVM's maximum heap (-Xmx) in MiB. At least 32.
	MaxHeapMB int
	// TLS, if set, makes every server also serve clients over TLS on a
	// secure client port of its own (SecureServers), through Netty, and
	// require a client certificate signed by TLS.CAFile. The plaintext
	// client port stays open (readiness is probed there).
	TLS TLSFiles
}

// TLSFiles names the PEM files of the servers' TLS: all three are needed.
type TLSFiles struct {
	// CertFile and KeyFile are the servers' certificate (naming 127.0.0.1)
	// and its PKCS #8 private key.
	CertFile, KeyFile string
	// CAFile holds the CA certificates client certificates must chain to.
	CAFile string
}

// Enabled reports whether TLS is on.
func (f TLSFiles) Enabled() bool { return f != TLSFiles{} }

// NettyCodecJar is the jar ZooKeeper's TLS needs beyond Classpath: Debian's
// zookeeper.jar does not name it in its manifest, though netty-handler's
// SslHandler needs it (without it every TLS connection is closed with
// NoClassDefFoundError io/netty/handler/codec/ByteToMessageDecoder).
const NettyCodecJar = "/usr/share/java/netty-codec.jar"

// DefaultConfig returns a Config tuned for short sessions: a 200 ms tick
// (session timeouts 400 ms to 4 s), initLimit 10 and syncLimit 5 ticks,
// fsync on, a 256 MiB heap per server and a temporary directory.
func DefaultConfig() Config {
	return Config{
		TickTime:  200 * time.Millisecond,
		InitLimit: 10,
		SyncLimit: 5,
		ForceSync: true,
		MaxHeapMB: 256,
	}
}

// Validate reports the first invalid field of cfg, by name.
func (cfg Config) Validate() error {
	switch {
	case cfg.TickTime <= 0 || cfg.TickTime%time.Millisecond != 0:
		return fmt.Errorf("zkserver: Config.TickTime must be a positive whole number of milliseconds, got %v", cfg.TickTime)
	case cfg.InitLimit < 1:
		return fmt.Errorf("zkserver: Config.InitLimit must be at least 1, got %d", cfg.InitLimit)
	case cfg.SyncLimit < 1:
		return fmt.Errorf("zkserver: Config.SyncLimit must be at least 1, got %d", cfg.SyncLimit)
	case cfg.MaxHeapMB < 32:
		return fmt.Errorf("zkserver: Config.MaxHeapMB must be at least 32, got %d", cfg.MaxHeapMB)
	case cfg.TLS.Enabled() && (cfg.TLS.CertFile == "" || cfg.TLS.KeyFile == "" || cfg.TLS.CAFile == ""):
		return errors.New("zkserver: Config.TLS needs CertFile, KeyFile and CAFile")
	}
	return nil
}

// SessionTimeouts returns the shortest and the longest session timeout the
// servers grant: 2 and 20 ticks. Clients asking for less or more get these.
func (cfg Config) SessionTimeouts() (minTimeout, maxTimeout time.Duration) {
	return 2 * cfg.TickTime, 20 * cfg.TickTime
}

// ErrClosed is returned by the methods of an Ensemble that was closed.
var ErrClosed = errors.New("zkserver: ensemble closed")
