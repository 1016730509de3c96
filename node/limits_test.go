package node

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"

	grpcpeer "google.golang.org/grpc/peer"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

func fromClient(port int) context.Context {
	return grpcpeer.NewContext(context.Background(), &grpcpeer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}})
}

// TestLimiterCountsRequestsPerConnection fills one connection's allowance
// with handlers that block: its next request is refused with ErrBusy
// without reaching the handler, another connection's is served, and a
// finished request frees its place.
func TestLimiterCountsRequestsPerConnection(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxClientRequests = 3
	l := newLimiter(&cfg)
	release := make(chan struct{})
	entered := make(chan struct{}, cfg.MaxClientRequests)
	blocking := func(context.Context, any) (any, error) {
		entered <- struct{}{}
		<-release
		return "done", nil
	}
	var wg sync.WaitGroup
	for i := 0; i < cfg.MaxClientRequests; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := l.serve(fromClient(1000), &kvpb.GetRequest{Key: "k"}, blocking); err != nil {
				t.Errorf("request within the limit: %v", err)
			}
		}()
	}
	for i := 0; i < cfg.MaxClientRequests; i++ {
		<-entered
	}
	called := false
	quick := func(context.Context, any) (any, error) { called = true; return "quick", nil }
	_, err := l.serve(fromClient(1000), &kvpb.GetRequest{Key: "k"}, quick)
	if !errors.Is(err, kvstore.ErrBusy) || called || !strings.Contains(err.Error(), "127.0.0.1:1000") {
		t.Fatalf("request over the limit: err %v, handler called %v; want ErrBusy naming the client, handler not called", err, called)
	}
	if resp, err := l.serve(fromClient(2000), &kvpb.GetRequest{Key: "k"}, quick); err != nil || resp != "quick" {
		t.Fatalf("another connection: %v %v", resp, err)
	}
	close(release)
	wg.Wait()
	called = false
	if _, err := l.serve(fromClient(1000), &kvpb.GetRequest{Key: "k"}, quick); err != nil || !called {
		t.Fatalf("after the blocked requests ended: %v (handler called %v)", err, called)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.inFlight) != 0 {
		t.Fatalf("idle connections still counted: %v", l.inFlight)
	}
}

// TestLimiterCountsABatchAsItsOperations: a batch takes one place per
// operation, so batching cannot carry a connection past its limit.
func TestLimiterCountsABatchAsItsOperations(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxClientRequests = 3
	l := newLimiter(&cfg)
	get := &kvpb.BatchOp{Op: &kvpb.BatchOp_Get{Get: &kvpb.GetRequest{Key: "k"}}}
	called := false
	h := func(context.Context, any) (any, error) { called = true; return "ok", nil }
	if _, err := l.serve(fromClient(1000), &kvpb.BatchRequest{Ops: []*kvpb.BatchOp{get, get, get, get}}, h); !errors.Is(err, kvstore.ErrBusy) || called {
		t.Fatalf("a batch of 4 with a limit of 3: err %v, handler called %v; want ErrBusy", err, called)
	}
	release := make(chan struct{})
	entered := make(chan struct{})
	go func() {
		_, _ = l.serve(fromClient(1000), &kvpb.BatchRequest{Ops: []*kvpb.BatchOp{get, get}}, func(context.Context, any) (any, error) {
			close(entered)
			<-release
			return "ok", nil
		})
	}()
	<-entered
	if _, err := l.serve(fromClient(1000), &kvpb.BatchRequest{Ops: []*kvpb.BatchOp{get, get}}, h); !errors.Is(err, kvstore.ErrBusy) || called {
		t.Fatalf("2 more with 2 of 3 in flight: err %v, handler called %v; want ErrBusy", err, called)
	}
	if _, err := l.serve(fromClient(1000), &kvpb.GetRequest{Key: "k"}, h); err != nil || !called {
		t.Fatalf("1 more with 2 of 3 in flight: err %v, handler called %v", err, called)
	}
	close(release)
}

// TestLimiterRefusesLargeRequestsBeforeTheHandler checks the encoded size
// bound, exactly at and just over the limit.
func TestLimiterRefusesLargeRequestsBeforeTheHandler(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxRequestSize = 100
	l := newLimiter(&cfg)
	h := func(context.Context, any) (any, error) { return "ok", nil }
	// A PutRequest with only a key costs 2 bytes of framing.
	at := &kvpb.PutRequest{Key: strings.Repeat("k", 98)}
	if _, err := l.serve(fromClient(1), at, h); err != nil {
		t.Fatalf("request of exactly MaxRequestSize: %v", err)
	}
	over := &kvpb.PutRequest{Key: strings.Repeat("k", 99)}
	if _, err := l.serve(fromClient(1), over, h); !errors.Is(err, kvstore.ErrTooLarge) || !strings.Contains(err.Error(), "request of 101 bytes (MaxRequestSize 100)") {
		t.Fatalf("request over MaxRequestSize: %v", err)
	}
}

func TestCheckWriteBounds(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxKeySize, cfg.MaxValueSize = 4, 8
	l := newLimiter(&cfg)
	for _, tc := range []struct {
		key, value string
		want       error
	}{
		{"", "v", kvstore.ErrBadRequest},
		{"kkkk", "vvvvvvvv", nil},
		{"kkkkk", "v", kvstore.ErrTooLarge},
		{"k", "vvvvvvvvv", kvstore.ErrTooLarge},
	} {
		err := l.checkWrite(tc.key, tc.value)
		if (tc.want == nil) != (err == nil) || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("checkWrite(%q, %q) = %v, want %v", tc.key, tc.value, err, tc.want)
		}
	}
}

func TestConfigRefusesBadLimits(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  func(*Config)
	}{
		{"MaxKeySize", func(c *Config) { c.MaxKeySize = 0 }},
		{"MaxValueSize", func(c *Config) { c.MaxValueSize = -1 }},
		{"MaxRequestSize", func(c *Config) { c.MaxRequestSize = c.MaxKeySize }},
		{"MaxClientRequests", func(c *Config) { c.MaxClientRequests = 0 }},
		{"MaxBatchBytes", func(c *Config) { c.MaxBatchBytes = 0 }},
		{"MaxValueSize", func(c *Config) { c.MaxValueSize = rpc.MaxMsgSize / 2 }},
		{"MaxKeySize", func(c *Config) { c.MaxKeySize = durable.MaxKeyLen + 1 }},
		{"ID", func(c *Config) { c.ID = strings.Repeat("n", MaxIDLen+1) }},
		{"ID", func(c *Config) { c.ID = "n\xff" }},
	} {
		cfg := DefaultConfig()
		cfg.ID, cfg.Coordinator = "n1", noCoord{}
		tc.set(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s: Validate = %v, want an error naming it", tc.name, err)
		}
	}
}
