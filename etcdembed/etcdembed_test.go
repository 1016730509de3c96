package etcdembed

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"
)

// TestMain checks that a closed Server leaves no goroutine behind. etcd v3.6
// needs no goleak.Ignore options for that.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestStartPutGetClose(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	srv, err := Start(ctx, DefaultConfig())
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	dir := srv.Dir()
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("data dir: %v", err)
	}
	if !strings.HasPrefix(srv.ClientURL(), "http://127.0.0.1:") || "http://"+srv.Endpoint() != srv.ClientURL() {
		t.Fatalf("ClientURL %q, Endpoint %q", srv.ClientURL(), srv.Endpoint())
	}

	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{srv.ClientURL()},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("client: %v", err)
	}
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put: %v", err)
	}
	resp, err := cli.Get(ctx, "k")
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get returned %v, want k=v", resp.Kvs)
	}
	// The default config must allow one-second leases.
	lease, err := cli.Grant(ctx, 1)
	if err != nil {
		t.Fatalf("grant: %v", err)
	}
	if lease.TTL != 1 {
		t.Fatalf("granted TTL %d, want 1", lease.TTL)
	}
	if err := cli.Close(); err != nil {
		t.Fatalf("client close: %v", err)
	}

	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp data dir %s still there after Close (stat: %v)", dir, err)
	}
}

func TestGivenDirIsKept(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cfg := DefaultConfig()
	cfg.Dir = filepath.Join(t.TempDir(), "etcd")
	var logs bytes.Buffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	srv, err := Start(ctx, cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, "member")); err != nil {
		t.Fatalf("given data dir not kept: %v", err)
	}
	// A clean start and stop logs nothing: the listener errors etcd reports
	// while it closes are dropped.
	if logs.Len() > 0 {
		t.Errorf("etcd logged:\n%s", logs.String())
	}
}

func TestStartCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	srv, err := Start(ctx, DefaultConfig())
	if err == nil {
		srv.Close()
		t.Fatal("Start with a canceled context succeeded")
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Start: %v, want context.Canceled", err)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		mutate func(*Config)
		field  string
	}{
		{func(c *Config) { c.HeartbeatInterval = 0 }, "HeartbeatInterval"},
		{func(c *Config) { c.HeartbeatInterval = 1500 * time.Microsecond }, "HeartbeatInterval"},
		{func(c *Config) { c.ElectionTimeout = 4 * c.HeartbeatInterval }, "ElectionTimeout"},
		{func(c *Config) { c.ElectionTimeout = time.Minute }, "ElectionTimeout"},
	} {
		cfg := DefaultConfig()
		tc.mutate(&cfg)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("Validate(%+v) = %v, want an error naming %s", cfg, err, tc.field)
		}
		if _, err := Start(context.Background(), cfg); err == nil {
			t.Errorf("Start accepted invalid config %+v", cfg)
		}
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Errorf("DefaultConfig().Validate() = %v", err)
	}
}
