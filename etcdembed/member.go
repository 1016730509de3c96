package etcdembed

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap/zapcore"
)

// ClusterState says whether a member bootstraps a new cluster or joins an
// existing one, as etcd's --initial-cluster-state.
type ClusterState string

const (
	// ClusterNew: the member is one of the initial members of a new cluster.
	ClusterNew ClusterState = "new"
	// ClusterExisting: the member joins a running cluster that it was added
	// to (etcdctl member add).
	ClusterExisting ClusterState = "existing"
)

// MemberConfig configures one member of a (possibly multi-member) etcd
// cluster on explicit URLs, like etcd's own flags. Start from
// DefaultMemberConfig.
type MemberConfig struct {
	// Config holds the data directory (temporary if empty, as for Start),
	// the member name, the raft timing and the logger. Unlike for Start,
	// Config.Logger receives every etcd record its handler enables, except
	// the listener errors etcd reports while it closes.
	Config
	// ListenClientURLs are the URLs the member serves clients on (etcd's
	// --listen-client-urls): https with Config.ClientTLS, else http.
	ListenClientURLs []url.URL
	// AdvertiseClientURLs are the client URLs the member tells the cluster
	// and its clients (--advertise-client-urls). If empty, ListenClientURLs,
	// which then must not name an unspecified host (0.0.0.0 or ::).
	AdvertiseClientURLs []url.URL
	// ListenPeerURLs are the URLs the member serves its peers on
	// (--listen-peer-urls): https with Config.PeerTLS, else http.
	ListenPeerURLs []url.URL
	// AdvertisePeerURLs are the peer URLs the member tells the cluster
	// (--initial-advertise-peer-urls). If empty, ListenPeerURLs, which then
	// must not name an unspecified host.
	AdvertisePeerURLs []url.URL
	// InitialCluster lists the members of the initial cluster as
	// name=peerURL,... (--initial-cluster), this member included with its
	// AdvertisePeerURLs. If empty: this member alone. It is ignored once the
	// data directory holds a member.
	InitialCluster string
	// ClusterState is ClusterNew (if empty) or ClusterExisting.
	ClusterState ClusterState
	// ClusterToken names the initial cluster (--initial-cluster-token), so
	// that members of different clusters never join each other. If empty,
	// etcd's default "etcd-cluster".
	ClusterToken string
	// UnsafeNoFsync disables every fsync of the member's WAL and backend
	// (etcd's --unsafe-no-fsync): faster, but an acknowledged write may be
	// lost if the machine crashes. For benchmarks only.
	UnsafeNoFsync bool
}

// DefaultMemberConfig returns DefaultConfig's name and timing (50 ms
// heartbeat, 500 ms election timeout) with etcd's default single local
// member: clients on http://127.0.0.1:2379, peers on http://127.0.0.1:2380,
// a new cluster of this member alone.
func DefaultMemberConfig() MemberConfig {
	return MemberConfig{
		Config:           DefaultConfig(),
		ListenClientURLs: []url.URL{{Scheme: "http", Host: "127.0.0.1:2379"}},
		ListenPeerURLs:   []url.URL{{Scheme: "http", Host: "127.0.0.1:2380"}},
		ClusterState:     ClusterNew,
	}
}

// Validate reports the first invalid field of cfg, by name. etcd checks
// InitialCluster itself when the member starts.
func (cfg MemberConfig) Validate() error {
	if err := cfg.Config.Validate(); err != nil {
		return err
	}
	for _, f := range []struct {
		name       string
		urls, dflt []url.URL
		tls        TLSFiles
		tlsName    string
	}{
		{"ListenClientURLs", cfg.ListenClientURLs, nil, cfg.ClientTLS, "ClientTLS"},
		{"AdvertiseClientURLs", cfg.AdvertiseClientURLs, cfg.ListenClientURLs, cfg.ClientTLS, "ClientTLS"},
		{"ListenPeerURLs", cfg.ListenPeerURLs, nil, cfg.PeerTLS, "PeerTLS"},
		{"AdvertisePeerURLs", cfg.AdvertisePeerURLs, cfg.ListenPeerURLs, cfg.PeerTLS, "PeerTLS"},
	} {
		if len(f.urls) == 0 && f.dflt == nil {
			return fmt.Errorf("etcdembed: MemberConfig.%s is empty", f.name)
		}
		for _, u := range f.urls {
			if err := checkURL(u); err != nil {
				return fmt.Errorf("etcdembed: MemberConfig.%s: %w", f.name, err)
			}
			if want := f.tls.scheme(); u.Scheme != want {
				if f.tls.Enabled() {
					return fmt.Errorf("etcdembed: MemberConfig.%s: %q must be https, since %s is set", f.name, u.String(), f.tlsName)
				}
				return fmt.Errorf("etcdembed: MemberConfig.%s: %q is https, but %s is not set", f.name, u.String(), f.tlsName)
			}
		}
		if len(f.urls) == 0 {
			for _, u := range f.dflt {
				if Unspecified(u) {
					return fmt.Errorf("etcdembed: MemberConfig.%s must be set: its default, %s, names no host", f.name, u.String())
				}
			}
		}
	}
	switch cfg.ClusterState {
	case "", ClusterNew, ClusterExisting:
	default:
		return fmt.Errorf("etcdembed: MemberConfig.ClusterState must be %q or %q, got %q", ClusterNew, ClusterExisting, cfg.ClusterState)
	}
	return nil
}

// ParseURLs parses a comma-separated list of member URLs, as etcd's URL
// flags take them, e.g. "http://10.0.0.1:2379,http://127.0.0.1:2379". Each
// must be http://host:port or https://host:port.
func ParseURLs(s string) ([]url.URL, error) {
	var urls []url.URL
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			return nil, fmt.Errorf("empty URL in %q", s)
		}
		u, err := url.Parse(part)
		if err != nil {
			return nil, fmt.Errorf("%q: want http://host:port or https://host:port", part)
		}
		if err := checkURL(*u); err != nil {
			return nil, err
		}
		urls = append(urls, *u)
	}
	return urls, nil
}

// checkURL reports whether u can be a member's client or peer URL:
// http://host:port or https://host:port with nothing after the port.
func checkURL(u url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q: want http://host:port or https://host:port", u.String())
	}
	_, port, err := net.SplitHostPort(u.Host)
	if err != nil || port == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("%q: want %s://host:port", u.String(), u.Scheme)
	}
	return nil
}

// Unspecified reports whether u's host is empty or an unspecified address
// (0.0.0.0, ::): fine to listen on, but not to advertise.
func Unspecified(u url.URL) bool {
	ip := net.ParseIP(u.Hostname())
	return u.Hostname() == "" || (ip != nil && ip.IsUnspecified())
}

// StartMember starts one member of an etcd cluster on cfg's URLs and waits
// until it is ready to serve clients, bounded by ctx. A member of a new
// multi-member cluster is ready only once a quorum of the cluster's members
// runs and a leader is elected, so start the members concurrently: until ctx
// ends, StartMember keeps waiting for its peers. On error nothing it started
// is left running, and a temporary data directory it created is removed.
//
// Unlike Start, StartMember does not pick other ports when one is taken.
func StartMember(ctx context.Context, cfg MemberConfig) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("etcdembed: start: %w", err)
	}
	if cfg.Name == "" {
		cfg.Name = "kvstore"
	}
	if len(cfg.AdvertiseClientURLs) == 0 {
		cfg.AdvertiseClientURLs = cfg.ListenClientURLs
	}
	if len(cfg.AdvertisePeerURLs) == 0 {
		cfg.AdvertisePeerURLs = cfg.ListenPeerURLs
	}
	if cfg.ClusterState == "" {
		cfg.ClusterState = ClusterNew
	}
	dir, removeDir := cfg.Dir, false
	if dir == "" {
		d, err := os.MkdirTemp("", "etcdembed-*")
		if err != nil {
			return nil, fmt.Errorf("etcdembed: create data dir: %w", err)
		}
		dir, removeDir = d, true
	}

	ec := embed.NewConfig()
	ec.Name = cfg.Name
	ec.Dir = dir
	ec.TickMs = uint(cfg.HeartbeatInterval / time.Millisecond)
	ec.ElectionMs = uint(cfg.ElectionTimeout / time.Millisecond)
	ec.ListenClientUrls = cfg.ListenClientURLs
	ec.AdvertiseClientUrls = cfg.AdvertiseClientURLs
	ec.ListenPeerUrls = cfg.ListenPeerURLs
	ec.AdvertisePeerUrls = cfg.AdvertisePeerURLs
	ec.InitialCluster = cfg.InitialCluster
	if ec.InitialCluster == "" {
		ec.InitialCluster = ec.InitialClusterFromName(cfg.Name)
	}
	ec.ClusterState = string(cfg.ClusterState)
	if cfg.ClusterToken != "" {
		ec.InitialClusterToken = cfg.ClusterToken
	}
	ec.EnableGRPCGateway = false
	ec.UnsafeNoFsync = cfg.UnsafeNoFsync
	applyTLS(ec, cfg.Config)
	closing := new(atomic.Bool)
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zapLogger(cfg.Logger, closing, zapcore.DebugLevel))

	e, err := startReady(ctx, ec, closing)
	if err != nil {
		if removeDir {
			_ = os.RemoveAll(dir)
		}
		return nil, err
	}
	return &Server{
		etcd:       e,
		clientURLs: cfg.AdvertiseClientURLs,
		dir:        dir,
		removeDir:  removeDir,
		closing:    closing,
		election:   cfg.ElectionTimeout,
	}, nil
}
