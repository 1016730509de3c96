package cluster

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/kvstore/kvstore/internal/logring"
)

// Failer is the part of testing.TB that ReportOnFailure uses.
type Failer interface {
	Failed() bool
	Logf(format string, args ...any)
	Cleanup(func())
}

// TestingT is the part of testing.TB that StartTest uses.
type TestingT interface {
	Failer
	Helper()
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// StartTest starts a cluster for one test (waiting at most a minute), closes
// it when the test ends, and makes a failing test print the cluster's state
// and its nodes' last log records (TestLogger, ReportOnFailure). A cluster
// that does not start fails the test, with the logs.
func StartTest(t TestingT, opts Options) *Cluster {
	t.Helper()
	ring := TestLogger(&opts)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := New(ctx, opts)
	if err != nil {
		if ring != nil {
			t.Logf("%s", ring.String())
		}
		t.Fatalf("start cluster: %v", err)
		return nil
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close cluster: %v", err)
		}
	})
	c.ReportOnFailure(t, ring)
	return c
}

// TestLogger gives a test's cluster a logger: unless opts.Logger is set, the
// nodes log into the returned ring (the last 400 records, every level) for
// ReportOnFailure to print; KVSTORE_TEST_LOG=debug (or info, warn) sends
// them to standard error as they come instead, and the ring is nil.
func TestLogger(opts *Options) *logring.Ring {
	if opts.Logger != nil {
		return nil
	}
	if lvl := os.Getenv("KVSTORE_TEST_LOG"); lvl != "" {
		var l slog.Level
		_ = l.UnmarshalText([]byte(lvl))
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
		return nil
	}
	ring := logring.New(400)
	opts.Logger = ring.Logger()
	return ring
}

// ReportOnFailure makes a test that fails print the cluster's state
// (Describe) and the nodes' last log records (ring, from TestLogger; nil for
// none) when it ends. Call it after registering the cluster's Close, so
// that it runs first, while the nodes still stand.
func (c *Cluster) ReportOnFailure(t Failer, ring *logring.Ring) {
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		t.Logf("%s", c.Describe())
		if ring != nil {
			t.Logf("%s", ring.String())
		}
	})
}
