package etcdembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// startAttempts bounds how often Start retries when a port it picked was
// taken by someone else between picking and binding.
const startAttempts = 5

// Config configures an embedded etcd server. The zero value is not valid; start
// from DefaultConfig.
type Config struct {
	// Dir is the data directory. If empty, Start creates a temporary
	// directory and Close removes it.
	Dir string
	// Name is the etcd member name. If empty, "kvstore" is used.
	Name string
	// HeartbeatInterval is the raft heartbeat interval. It must be a positive
	// whole number of milliseconds.
	HeartbeatInterval time.Duration
	// ElectionTimeout is the raft election timeout, a whole number of
	// milliseconds of at least 5 heartbeat intervals and at most 50 s. etcd's
	// minimum lease TTL is 1.5 election timeouts, rounded up to a second.
	ElectionTimeout time.Duration
	// Logger, if non-nil, receives etcd's log records of level error and
	// above. If nil, etcd logs nothing.
	Logger *slog.Logger
}

// DefaultConfig returns a Config tuned for short session TTLs: a 50 ms
// heartbeat and a 500 ms election timeout (minimum lease TTL 1 s), a temporary
// data directory and no logging.
func DefaultConfig() Config {
	return Config{
		Name:              "kvstore",
		HeartbeatInterval: 50 * time.Millisecond,
		ElectionTimeout:   500 * time.Millisecond,
	}
}

// Validate reports the first invalid field of cfg, by name.
func (cfg Config) Validate() error {
	hb, el := cfg.HeartbeatInterval, cfg.ElectionTimeout
	switch {
	case hb <= 0 || hb%time.Millisecond != 0:
		return fmt.Errorf("etcdembed: Config.HeartbeatInterval must be a positive whole number of milliseconds, got %v", hb)
	case el%time.Millisecond != 0 || el < 5*hb:
		return fmt.Errorf("etcdembed: Config.ElectionTimeout must be whole milliseconds and at least 5 x HeartbeatInterval (%v), got %v", 5*hb, el)
	case el > 50*time.Second:
		return fmt.Errorf("etcdembed: Config.ElectionTimeout must be at most 50s, got %v", el)
	}
	return nil
}

// Server is a running embedded etcd server. Close it when done.
type Server struct {
	etcd      *embed.Etcd
	clientURL url.URL
	dir       string
	removeDir bool         // Start created dir, so Close removes it
	closing   *atomic.Bool // set when Close starts; quiets the log forwarder

	closeOnce sync.Once
	closeErr  error
}

// Start starts a single-member etcd cluster on free loopback ports and waits
// until it is ready to serve clients, bounded by ctx. On error nothing it
// started is left running, and a temporary data directory it created is
// removed.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("etcdembed: start: %w", err)
	}
	if cfg.Name == "" {
		cfg.Name = "kvstore"
	}
	dir, removeDir := cfg.Dir, false
	if dir == "" {
		d, err := os.MkdirTemp("", "etcdembed-*")
		if err != nil {
			return nil, fmt.Errorf("etcdembed: create data dir: %w", err)
		}
		dir, removeDir = d, true
	}

	var err error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		var s *Server
		s, err = startOnce(ctx, cfg, dir)
		if err == nil {
			s.removeDir = removeDir
			return s, nil
		}
		if !isAddrInUse(err) || ctx.Err() != nil {
			break
		}
	}
	if removeDir {
		_ = os.RemoveAll(dir)
	}
	return nil, err
}

// startOnce makes one attempt to start etcd in dir on freshly picked ports.
func startOnce(ctx context.Context, cfg Config, dir string) (*Server, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, fmt.Errorf("etcdembed: pick ports: %w", err)
	}
	clientURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
	peerURL := url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = dir
	ec.TickMs = uint(cfg.HeartbeatInterval / time.Millisecond)
	ec.ElectionMs = uint(cfg.ElectionTimeout / time.Millisecond)
	ec.ListenClientUrls = []url.URL{clientURL}
	ec.AdvertiseClientUrls = []url.URL{clientURL}
	ec.ListenPeerUrls = []url.URL{peerURL}
	ec.AdvertisePeerUrls = []url.URL{peerURL}
	ec.InitialCluster = ec.InitialClusterFromName(cfg.Name)
	ec.EnableGRPCGateway = false
	ec.LogLevel = "error"
	closing := new(atomic.Bool)
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapLogger(cfg.Logger, closing))

	// StartEtcd closes everything it started when it fails.
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("etcdembed: start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return &Server{etcd: e, clientURL: clientURL, dir: dir, closing: closing}, nil
	case err = <-e.Err():
		err = fmt.Errorf("etcdembed: etcd failed before ready: %w", err)
	case <-ctx.Done():
		err = fmt.Errorf("etcdembed: waiting for etcd to be ready: %w", ctx.Err())
	}
	closing.Store(true)
	e.Close()
	<-e.Server.StopNotify()
	return nil, err
}

// ClientURL returns the URL clients dial, e.g. "http://127.0.0.1:2379".
func (s *Server) ClientURL() string { return s.clientURL.String() }

// Endpoint returns the client address in host:port form, e.g.
// "127.0.0.1:2379", as TCP proxies want it.
func (s *Server) Endpoint() string { return s.clientURL.Host }

// Dir returns the data directory.
func (s *Server) Dir() string { return s.dir }

// Close shuts the server down and waits for it, in this order:
//
//  1. stop the client gRPC and HTTP servers (in-flight requests get etcd's
//     request timeout) and close the client listeners;
//  2. stop the etcd server: raft, the apply loop, the lessor and the peer
//     transport (leadership transfer is skipped: there is one member);
//  3. close the peer listeners (idle peer connections get up to 1 s);
//  4. wait for every serving goroutine, then for the server's StopNotify;
//  5. remove the data directory if Start created it.
//
// Steps 1-4 are embed.Etcd.Close. While it runs, etcd's reports of the
// listeners it closes are not forwarded to Config.Logger. Close is
// idempotent: later calls return the first call's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		s.etcd.Close()
		<-s.etcd.Server.StopNotify()
		if s.removeDir {
			if err := os.RemoveAll(s.dir); err != nil {
				s.closeErr = fmt.Errorf("etcdembed: remove data dir: %w", err)
			}
		}
	})
	return s.closeErr
}

// freePorts returns n distinct loopback TCP ports that were free a moment ago.
// Another process may take one before etcd binds it; Start retries then.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		// Keep it open until all are picked so the n ports differ.
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// isAddrInUse reports whether err says a port was taken. etcd does not always
// keep the error chain, so the message is checked too.
func isAddrInUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// zapLogger returns the logger handed to etcd: a no-op one, or one that
// forwards error-level records to l until closing is set.
func zapLogger(l *slog.Logger, closing *atomic.Bool) *zap.Logger {
	if l == nil {
		return zap.NewNop()
	}
	return zap.New(&slogCore{log: l, closing: closing})
}
