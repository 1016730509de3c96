package client_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kvstore/kvstore/client"
)

// closedAddr is a loopback address nothing listens at.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// TestFailWhenRefused: with FailWhenRefused, a call against endpoints that
// all refuse the connection fails at once, well before DialTimeout and
// Timeout, with ErrRefused and ErrUnavailable and the endpoints named; a
// write is not outcome-unknown (nothing was sent).
func TestFailWhenRefused(t *testing.T) {
	a, b := closedAddr(t), closedAddr(t)
	const dial = 10 * time.Second
	c, err := client.New(client.Config{Endpoints: []string{a, b}, Timeout: 30 * time.Second, DialTimeout: dial, FailWhenRefused: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, call := range []struct {
		op string
		do func(context.Context) error
	}{
		{"get", func(ctx context.Context) error { _, _, err := c.Get(ctx, "k"); return err }},
		{"put", func(ctx context.Context) error { return c.Put(ctx, "k", "v") }},
		{"status", func(ctx context.Context) error { _, err := c.Status(ctx); return err }},
	} {
		start := time.Now()
		err := call.do(context.Background())
		took := time.Since(start)
		if !errors.Is(err, client.ErrRefused) || !errors.Is(err, client.ErrUnavailable) {
			t.Errorf("%s: %v; want ErrRefused and ErrUnavailable", call.op, err)
		}
		if errors.Is(err, client.ErrOutcomeUnknown) || errors.Is(err, client.ErrTimeout) {
			t.Errorf("%s: %v; want neither outcome-unknown nor a timeout", call.op, err)
		}
		if err != nil && (!strings.Contains(err.Error(), a) || !strings.Contains(err.Error(), b) || !strings.Contains(err.Error(), "connection refused")) {
			t.Errorf("%s: %v does not name both endpoints and the refusal", call.op, err)
		}
		if took >= dial {
			t.Errorf("%s: took %v, want less than DialTimeout %v", call.op, took, dial)
		}
		t.Logf("%s: failed after %v", call.op, took)
	}
}

// TestRefusedRetriedByDefault: without FailWhenRefused a refused endpoint
// is retried until the call's deadline (a node may be restarting), as
// before.
func TestRefusedRetriedByDefault(t *testing.T) {
	addr := closedAddr(t)
	const timeout = 600 * time.Millisecond
	c, err := client.New(client.Config{Endpoints: []string{addr}, Timeout: timeout})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	_, _, err = c.Get(context.Background(), "k")
	if took := time.Since(start); took < timeout {
		t.Errorf("failed after %v, before Timeout %v: %v", took, timeout, err)
	}
	if !errors.Is(err, client.ErrTimeout) || errors.Is(err, client.ErrRefused) {
		t.Errorf("%v; want ErrTimeout, not ErrRefused", err)
	}
}

// TestDialTimeoutOnBlackHole: an endpoint that accepts TCP connections
// but never speaks gRPC (a listener nobody accepts from) fails a call after
// about DialTimeout, not at Timeout.
func TestDialTimeoutOnBlackHole(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const dial = time.Second
	c, err := client.New(client.Config{Endpoints: []string{l.Addr().String()}, Timeout: 30 * time.Second, DialTimeout: dial, FailWhenRefused: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	err = c.Put(context.Background(), "k", "v")
	took := time.Since(start)
	if !errors.Is(err, client.ErrUnavailable) || errors.Is(err, client.ErrRefused) || errors.Is(err, client.ErrOutcomeUnknown) {
		t.Errorf("%v; want ErrUnavailable, neither refused nor outcome-unknown", err)
	}
	if err != nil && !strings.Contains(err.Error(), "dial timeout") {
		t.Errorf("%v does not name the dial timeout", err)
	}
	if took < dial || took > dial+5*time.Second {
		t.Errorf("failed after %v, want about DialTimeout %v", took, dial)
	}
	t.Logf("failed after %v: %v", took, err)
}

// TestDialTimeoutSparesASlowAnswer: DialTimeout bounds only the wait for
// a connection: a node that is connected and answers after DialTimeout
// has passed is waited for (up to AttemptTimeout).
func TestDialTimeoutSparesASlowAnswer(t *testing.T) {
	const dial = 200 * time.Millisecond
	addr, _ := serve(t, &fakeKV{answer: func(ctx context.Context) error {
		select {
		case <-time.After(3 * dial):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}})
	c, err := client.New(client.Config{Endpoints: []string{addr}, Timeout: 10 * time.Second, AttemptTimeout: 5 * time.Second, DialTimeout: dial, FailWhenRefused: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Put(context.Background(), "k", "v"); err != nil {
		t.Fatalf("a slow answer after the dial timeout: %v", err)
	}
}

// TestNegativeDialTimeout: New refuses a negative DialTimeout.
func TestNegativeDialTimeout(t *testing.T) {
	if _, err := client.New(client.Config{Endpoints: []string{"127.0.0.1:1"}, DialTimeout: -time.Second}); err == nil || !strings.Contains(err.Error(), "DialTimeout") {
		t.Fatalf("New with DialTimeout -1s: %v; want an error naming DialTimeout", err)
	}
}
