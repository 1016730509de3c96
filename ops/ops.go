// Package ops is a node's operations HTTP server: Prometheus metrics,
// liveness and readiness probes, and the Go profiler.
//
//	GET /metrics          Prometheus text exposition of Config.Gatherer
//	GET /healthz          200 "ok" while the process runs
//	GET /readyz           200 "ready" when Config.Ready returns nil, else 503
//	                      and one line saying why
//	GET /debug/pprof/...  net/http/pprof (index, profile, trace, heap, ...)
//
// Every handler lives on the Server's own ServeMux; nothing is served from
// http.DefaultServeMux (importing net/http/pprof registers its handlers
// there too, but this package never serves it).
//
// Lifecycle:
//
//	s, err := ops.New(ops.Config{Gatherer: reg, Ready: n.Ready})
//	err = s.Start("127.0.0.1:9100") // binds, then serves in the background
//	addr := s.Addr()                // the bound address (port 0 resolved)
//	err = s.Close(ctx)              // graceful; forced when ctx ends
//
// Close waits for the serving goroutine, so a closed Server leaves no
// goroutine behind.
package ops

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ErrClosed is returned by Start on a Server that was closed.
var ErrClosed = errors.New("ops: server closed")

// Config configures a Server.
type Config struct {
	// Gatherer is what /metrics exposes (required): typically a
	// *prometheus.Registry made by NewRegistry.
	Gatherer prometheus.Gatherer
	// Ready decides /readyz: nil means ready, an error is the reason it is
	// not (its message is the 503's body). A nil Ready is always ready.
	Ready func() error
	// Logger receives the HTTP server's errors (default: discard).
	Logger *slog.Logger
	// TLS, if set, makes the server speak HTTPS with it; a node with mutual
	// TLS passes its server configuration, so that only holders of a
	// certificate of the cluster's CA may scrape or profile it. nil: plain
	// HTTP.
	TLS *tls.Config
}

// Server is the operations HTTP server. Its methods are safe for concurrent
// use.
type Server struct {
	cfg     Config
	handler http.Handler

	mu     sync.Mutex
	srv    *http.Server
	addr   string
	done   chan struct{} // closed when Serve returns
	closed bool
}

// New returns a Server that is not yet listening.
func New(cfg Config) (*Server, error) {
	if cfg.Gatherer == nil {
		return nil, errors.New("ops: config: Gatherer is nil")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg}
	s.handler = s.routes()
	return s, nil
}

// NewRegistry returns a registry holding the Go runtime and process
// collectors and cs (for instance a node's Collectors).
func NewRegistry(cs ...prometheus.Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	all := append([]prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}, cs...)
	for _, c := range all {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("ops: register collector: %w", err)
		}
	}
	return reg, nil
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		text(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		text(w, http.StatusOK, "/metrics\n/healthz\n/readyz\n/debug/pprof/")
	})
	return mux
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(); err != nil {
			text(w, http.StatusServiceUnavailable, "not ready: "+strings.Join(strings.Fields(err.Error()), " "))
			return
		}
	}
	text(w, http.StatusOK, "ready")
}

func text(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body+"\n")
}

// Handler is the Server's routes, for mounting elsewhere or testing without
// a listener.
func (s *Server) Handler() http.Handler { return s.handler }

// Start listens on addr (host:port; port 0 picks a free one) and serves in
// the background until Close. It fails if the address cannot be bound, if
// the Server was started already, or after Close.
func (s *Server) Start(addr string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.srv != nil:
		return fmt.Errorf("ops: already serving on %s", s.addr)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("ops: listen: %w", err)
	}
	if s.cfg.TLS != nil {
		lis = tls.NewListener(lis, s.cfg.TLS.Clone())
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(s.cfg.Logger.Handler(), slog.LevelWarn),
		// No WriteTimeout: /debug/pprof/profile and trace stream for as
		// long as the client asks (?seconds=N).
	}
	s.srv, s.addr, s.done = srv, lis.Addr().String(), make(chan struct{})
	go func() {
		defer close(s.done)
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.cfg.Logger.Error("ops server stopped", "addr", lis.Addr().String(), "err", err)
		}
	}()
	return nil
}

// Addr is the address the Server listens on, or "" before Start.
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Close stops the Server: it stops accepting, lets requests in flight
// finish until ctx ends, then closes every connection, and returns once the
// serving goroutine has exited. It returns ctx's error (wrapped) if it had
// to force connections closed. It is idempotent (a second Close waits for
// the first, until its own ctx ends), and valid before Start.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	srv, done, already := s.srv, s.done, s.closed
	s.closed = true
	s.mu.Unlock()
	if srv == nil {
		return nil
	}
	if already {
		// Another Close is stopping it: wait for that one.
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("ops: close: %w", ctx.Err())
		}
	}
	err := srv.Shutdown(ctx)
	if err != nil {
		// Requests still running (a long profile): cut them off.
		_ = srv.Close()
		err = fmt.Errorf("ops: shutdown: %w", err)
	}
	<-done
	return err
}
