package ops_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kvstore/kvstore/certs"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/internal/testpki"
	"github.com/kvstore/kvstore/ops"
)

// get fetches url and returns the status code and body.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// startServer starts a Server on a free loopback port and closes it at the
// end of the test.
func startServer(t *testing.T, cfg ops.Config) *ops.Server {
	t.Helper()
	s, err := ops.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return s
}

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	ctr := prometheus.NewCounter(prometheus.CounterOpts{Name: "kvstore_test_total", Help: "A test counter."})
	reg.MustRegister(ctr)
	ctr.Add(3)
	var notReady atomic.Pointer[error]
	ready := func() error {
		if p := notReady.Load(); p != nil {
			return *p
		}
		return nil
	}
	reason := errors.New("node n1: state suspended\n(second line)")
	notReady.Store(&reason)
	s := startServer(t, ops.Config{Gatherer: reg, Ready: ready})
	base := "http://" + s.Addr()

	if code, body := get(t, base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get(t, base+"/readyz"); code != 503 || body != "not ready: node n1: state suspended (second line)\n" {
		t.Errorf("/readyz while not ready: %d %q, want 503 and one line", code, body)
	}
	notReady.Store(nil)
	if code, body := get(t, base+"/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz when ready: %d %q", code, body)
	}
	if code, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "\nkvstore_test_total 3\n") {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
	if code, body := get(t, base+"/debug/pprof/"); code != 200 || !strings.Contains(body, "goroutine") {
		t.Errorf("/debug/pprof/: %d\n%s", code, body)
	}
	if code, body := get(t, base+"/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile:") {
		t.Errorf("/debug/pprof/goroutine: %d\n%.300s", code, body)
	}
	if code, _ := get(t, base+"/debug/pprof/cmdline"); code != 200 {
		t.Errorf("/debug/pprof/cmdline: %d", code)
	}
	if code, body := get(t, base+"/"); code != 200 || !strings.Contains(body, "/readyz") {
		t.Errorf("/: %d %q", code, body)
	}
	if code, _ := get(t, base+"/nope"); code != 404 {
		t.Errorf("/nope: %d, want 404", code)
	}
	// Nothing comes from http.DefaultServeMux.
	defaultMuxRoute.Do(func() {
		http.DefaultServeMux.HandleFunc("/ops-test-default-mux", func(http.ResponseWriter, *http.Request) {})
	})
	if code, _ := get(t, base+"/ops-test-default-mux"); code != 404 {
		t.Errorf("a DefaultServeMux route answered %d", code)
	}
}

// defaultMuxRoute registers a route on http.DefaultServeMux once per
// process (-count=N runs TestEndpoints N times).
var defaultMuxRoute sync.Once

func TestNilReadyIsReady(t *testing.T) {
	s := startServer(t, ops.Config{Gatherer: prometheus.NewRegistry()})
	if code, _ := get(t, "http://"+s.Addr()+"/readyz"); code != 200 {
		t.Errorf("/readyz: %d", code)
	}
}

func TestLifecycleErrors(t *testing.T) {
	if _, err := ops.New(ops.Config{}); err == nil {
		t.Error("New without a Gatherer succeeded")
	}
	s, err := ops.New(ops.Config{Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if s.Addr() != "" {
		t.Errorf("Addr before Start = %q", s.Addr())
	}
	if err := s.Close(context.Background()); err != nil {
		t.Errorf("Close before Start: %v", err)
	}
	if err := s.Start("127.0.0.1:0"); !errors.Is(err, ops.ErrClosed) {
		t.Errorf("Start after Close: %v, want ErrClosed", err)
	}

	s = startServer(t, ops.Config{Gatherer: prometheus.NewRegistry()})
	if err := s.Start("127.0.0.1:0"); err == nil {
		t.Error("a second Start succeeded")
	}
	other, err := ops.New(ops.Config{Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	var opErr *net.OpError
	if err := other.Start(s.Addr()); !errors.As(err, &opErr) {
		t.Errorf("Start on a taken address: %v, want a wrapped *net.OpError", err)
	}
	if err := other.Close(context.Background()); err != nil {
		t.Errorf("Close after a failed Start: %v", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := http.Get("http://" + s.Addr() + "/healthz"); err == nil {
		t.Error("the closed server still answers")
	}
}

// TestCloseCutsLongRequests: a request that would run for 30s (a delta
// goroutine profile) does not hold Close beyond its context.
func TestCloseCutsLongRequests(t *testing.T) {
	s, err := ops.New(ops.Config{Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	req, err := http.NewRequest("GET", "http://"+s.Addr()+"/debug/pprof/goroutine?seconds=30", nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	go func() {
		resp, err := client.Do(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		done <- err
	}()
	// Wait until the server runs the handler (the client having written
	// the request does not mean the server accepted the connection).
	soon.Succeeds(t, 10*time.Second, func() error {
		var buf bytes.Buffer
		if err := pprof.Lookup("goroutine").WriteTo(&buf, 2); err != nil {
			return err
		}
		if !strings.Contains(buf.String(), "serveDeltaProfile") {
			return errors.New("no goroutine runs the profile handler yet")
		}
		return nil
	})
	start := time.Now()
	cctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = s.Close(cctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Close with a request in flight: %v, want a wrapped DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the in-flight request did not end after Close")
	}
}

// TestConcurrentClose: two Closes at once both return once the server is
// down.
func TestConcurrentClose(t *testing.T) {
	s, err := ops.New(ops.Config{Gatherer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start("127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			errs <- s.Close(ctx)
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if _, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		t.Error("the closed server still accepts connections")
	}
}

func TestNewRegistry(t *testing.T) {
	ctr := prometheus.NewCounter(prometheus.CounterOpts{Name: "kvstore_x_total", Help: "x"})
	reg, err := ops.NewRegistry(ctr)
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{"kvstore_x_total", "go_goroutines", "process_start_time_seconds"} {
		if !names[want] {
			t.Errorf("no %s in %v", want, names)
		}
	}
	if _, err := ops.NewRegistry(ctr, ctr); err == nil {
		t.Error("registering a collector twice succeeded")
	} else if !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
		t.Errorf("duplicate registration: %v, want a wrapped AlreadyRegisteredError", err)
	}
}

// With TLS the server speaks only HTTPS, and with a mutual TLS
// configuration only to holders of a certificate of the CA: a plain HTTP
// request, a client without a certificate and one of another CA get no
// metrics.
func TestTLS(t *testing.T) {
	ca, err := certs.NewCA("ops test CA")
	if err != nil {
		t.Fatal(err)
	}
	nodeKP, err := ca.Node([]string{"127.0.0.1"})
	nodeCert := testpki.Certificate(t, nodeKP, err)
	aliceKP, err := ca.Client("alice")
	alice := testpki.Certificate(t, aliceKP, err)
	other, err := certs.NewCA("another CA")
	if err != nil {
		t.Fatal(err)
	}
	malloryKP, err := other.Client("mallory")
	mallory := testpki.Certificate(t, malloryKP, err)

	s := startServer(t, ops.Config{Gatherer: prometheus.NewRegistry(), TLS: certs.ServerConfig(nodeCert, ca.Pool())})
	fetch := func(scheme string, cfg *tls.Config) (int, error) {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg}}
		defer c.CloseIdleConnections()
		resp, err := c.Get(scheme + "://" + s.Addr() + "/metrics")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	if code, err := fetch("https", certs.ClientConfig(alice, ca.Pool())); err != nil || code != http.StatusOK {
		t.Fatalf("HTTPS with a client certificate of the CA: %d %v, want 200", code, err)
	}
	if code, err := fetch("http", nil); err == nil && code == http.StatusOK {
		t.Errorf("plain HTTP was served")
	}
	if code, err := fetch("https", &tls.Config{RootCAs: ca.Pool()}); err == nil {
		t.Errorf("HTTPS without a client certificate: %d, want a refused handshake", code)
	}
	if code, err := fetch("https", certs.ClientConfig(mallory, ca.Pool())); err == nil {
		t.Errorf("HTTPS with another CA's certificate: %d, want a refused handshake", code)
	}
}
