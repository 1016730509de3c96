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

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
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
	// above (for StartMember: every record its handler enables). If nil,
	// etcd logs nothing.
	Logger *slog.Logger
	// ClientTLS, if set, serves the client URLs over TLS (https). With its
	// CAFile, every client must present a certificate signed by one of
	// those CAs (client certificate authentication).
	ClientTLS TLSFiles
	// PeerTLS, if set, serves and dials the peer URLs over TLS (https).
	// With its CAFile, every peer must present a certificate signed by one
	// of those CAs. The certificate serves as a client certificate too when
	// this member dials its peers, so it must allow both uses.
	PeerTLS TLSFiles
}

// TLSFiles names the PEM files that secure a member's client or peer URLs.
// The zero value means no TLS.
type TLSFiles struct {
	// CertFile and KeyFile are the member's certificate (with any
	// intermediate certificates) and its private key. Setting them turns
	// TLS on.
	CertFile, KeyFile string
	// CAFile, if set, holds the CA certificates that the other side's
	// certificate must chain to; the other side must then present one
	// (etcd's --trusted-ca-file, which implies --client-cert-auth). It needs
	// CertFile and KeyFile.
	CAFile string
}

// Enabled reports whether TLS is on.
func (f TLSFiles) Enabled() bool { return f.CertFile != "" }

// scheme is the URL scheme that f serves: https with TLS, else http.
func (f TLSFiles) scheme() string {
	if f.Enabled() {
		return "https"
	}
	return "http"
}

// validate reports an incomplete TLSFiles, naming it as field.
func (f TLSFiles) validate(field string) error {
	switch {
	case (f.CertFile == "") != (f.KeyFile == ""):
		return fmt.Errorf("etcdembed: %s: CertFile and KeyFile go together", field)
	case f.CAFile != "" && f.CertFile == "":
		return fmt.Errorf("etcdembed: %s: CAFile needs CertFile and KeyFile", field)
	}
	return nil
}

// info is f as etcd takes it.
func (f TLSFiles) info() transport.TLSInfo {
	return transport.TLSInfo{
		CertFile:       f.CertFile,
		KeyFile:        f.KeyFile,
		TrustedCAFile:  f.CAFile,
		ClientCertAuth: f.CAFile != "",
	}
}

// applyTLS sets ec's client and peer TLS from cfg.
func applyTLS(ec *embed.Config, cfg Config) {
	if cfg.ClientTLS.Enabled() {
		ec.ClientTLSInfo = cfg.ClientTLS.info()
	}
	if cfg.PeerTLS.Enabled() {
		ec.PeerTLSInfo = cfg.PeerTLS.info()
	}
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
	if err := cfg.ClientTLS.validate("Config.ClientTLS"); err != nil {
		return err
	}
	return cfg.PeerTLS.validate("Config.PeerTLS")
}

// Server is a running embedded etcd server. Close it when done.
type Server struct {
	etcd       *embed.Etcd
	clientURLs []url.URL // advertised; at least one
	dir        string
	removeDir  bool         // Start created dir, so Close removes it
	closing    *atomic.Bool // set when Close starts; quiets the log forwarder
	election   time.Duration

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
	clientURL := url.URL{Scheme: cfg.ClientTLS.scheme(), Host: fmt.Sprintf("127.0.0.1:%d", ports[0])}
	peerURL := url.URL{Scheme: cfg.PeerTLS.scheme(), Host: fmt.Sprintf("127.0.0.1:%d", ports[1])}

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
	applyTLS(ec, cfg)
	closing := new(atomic.Bool)
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapLogger(cfg.Logger, closing, zapcore.ErrorLevel))

	e, err := startReady(ctx, ec, closing)
	if err != nil {
		return nil, err
	}
	return &Server{etcd: e, clientURLs: []url.URL{clientURL}, dir: dir, closing: closing, election: cfg.ElectionTimeout}, nil
}

// startReady starts etcd with ec and waits until it is ready to serve
// clients, bounded by ctx. On error it stops etcd again and waits for it.
func startReady(ctx context.Context, ec *embed.Config, closing *atomic.Bool) (*embed.Etcd, error) {
	// StartEtcd closes everything it started when it fails.
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("etcdembed: start etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return e, nil
	case err = <-e.Err():
		err = fmt.Errorf("etcdembed: etcd failed before ready: %w", err)
	case <-e.Server.StopNotify():
		err = errors.New("etcdembed: etcd stopped before ready")
	case <-ctx.Done():
		err = fmt.Errorf("etcdembed: waiting for etcd to be ready: %w", ctx.Err())
	}
	closing.Store(true)
	// Stop the server before Close: etcd's client servers start only once
	// it is ready or stopping, and Close waits for them first, so Close
	// alone would hang on a member still waiting for its quorum.
	e.Server.HardStop()
	e.Close()
	<-e.Server.StopNotify()
	return nil, err
}

// ClientURL returns the URL clients dial, e.g. "http://127.0.0.1:2379": the
// first advertised client URL.
func (s *Server) ClientURL() string { return s.clientURLs[0].String() }

// ClientURLs returns every advertised client URL.
func (s *Server) ClientURLs() []string {
	urls := make([]string, len(s.clientURLs))
	for i, u := range s.clientURLs {
		urls[i] = u.String()
	}
	return urls
}

// Endpoint returns the client address in host:port form, e.g.
// "127.0.0.1:2379", as TCP proxies want it: the host of ClientURL.
func (s *Server) Endpoint() string { return s.clientURLs[0].Host }

// Dir returns the data directory.
func (s *Server) Dir() string { return s.dir }

// Err returns a channel that receives an error when etcd stops serving on
// its own, e.g. a listener fails. Close closes it.
func (s *Server) Err() <-chan error { return s.etcd.Err() }

// Done returns a channel that is closed when the etcd server has stopped:
// after Close, or on its own, e.g. when this member was removed from its
// cluster or hit a fatal error.
func (s *Server) Done() <-chan struct{} { return s.etcd.Server.StopNotify() }

// Close shuts the server down and waits for it, in this order:
//
//  1. if this member leads a cluster with other voting members, hand
//     leadership to the best-connected one (see handOver); with one member
//     this is skipped;
//  2. stop the client gRPC and HTTP servers (in-flight requests get etcd's
//     request timeout) and close the client listeners;
//  3. stop the etcd server: raft, the apply loop, the lessor and the peer
//     transport;
//  4. close the peer listeners (idle peer connections get up to 1 s);
//  5. wait for every serving goroutine, then for the server's StopNotify;
//  6. remove the data directory if Start created it.
//
// Steps 2-5 are embed.Etcd.Close. While Close runs, etcd's reports of the
// listeners it closes are not forwarded to Config.Logger. Close is
// idempotent: later calls return the first call's result.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		s.handOver()
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

// handOver hands leadership to another voting member if this one leads, so
// that the cluster need not wait an election timeout for a new leader. etcd's
// Close does this too, but if the transferee does not take over (say it is
// stopping as well) it polls for etcd's whole request timeout, 5 s + 2
// election timeouts. raft itself gives up a transfer after one election
// timeout, so handOver waits two, then stops the server, which ends the
// transfer; Close's own attempt then finds the server stopped.
func (s *Server) handOver() {
	done := make(chan error, 1)
	go func() { done <- s.etcd.Server.TryTransferLeadershipOnShutdown() }()
	timer := time.NewTimer(2 * s.election)
	defer timer.Stop()
	var err error
	select {
	case err = <-done:
	case <-timer.C:
		s.etcd.Server.HardStop()
		err = fmt.Errorf("no new leader after %v: %w", 2*s.election, <-done)
	}
	if err != nil {
		s.etcd.GetLogger().Warn("leadership transfer failed", zap.Error(err))
	}
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
// forwards records of level floor and above to l (error-level ones only
// until closing is set).
func zapLogger(l *slog.Logger, closing *atomic.Bool, floor zapcore.Level) *zap.Logger {
	if l == nil {
		return zap.NewNop()
	}
	return zap.New(&slogCore{log: l, closing: closing, floor: floor})
}
