package memcoord

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/coord/internal/goroutines"
)

// errClosed is returned by calls on a closed Coordinator.
var errClosed = errors.New("memcoord: coordinator closed")

// Config configures a Coordinator. Zero fields take the defaults of
// DefaultConfig.
type Config struct {
	// Name names the connection to the Server, for the fault hooks
	// (Server.Cut, Server.Heal, Server.ExpireSessions): a simulation names
	// it after the node, so that a restarted node's new Coordinator stays
	// cut. Several Coordinators may share a name. Empty: a name of its own,
	// "conn-<n>".
	Name string
	// DriftMargin is the fraction of the TTL subtracted from every session
	// deadline, to cover clock-rate differences between the client's Clock
	// and the Server's (the time package). In [0, 1); 0 means the default,
	// 0.1, as the other backends.
	DriftMargin float64
	// Clock is the clock session deadlines are measured on; nil means
	// clock.System(). Inside a testing/synctest bubble, give a clock that
	// reads the time package (the bubble's virtual time), skewed as the
	// simulation wants.
	Clock clock.Clock
}

// DefaultConfig returns the defaults: a name of its own, drift margin 0.1,
// clock.System().
func DefaultConfig() Config { return Config{DriftMargin: 0.1} }

// Validate reports the first invalid field, by name.
func (cfg Config) Validate() error {
	if cfg.DriftMargin < 0 || cfg.DriftMargin >= 1 || math.IsNaN(cfg.DriftMargin) {
		return fmt.Errorf("memcoord: Config.DriftMargin must be in [0, 1), got %v", cfg.DriftMargin)
	}
	return nil
}

// Coordinator is a coord.Coordinator connected to a Server: one client's
// connection. It is safe for concurrent use. Its calls go to the Server at
// once unless the connection is cut (Server.Cut), when they block until it
// heals or their ctx ends.
type Coordinator struct {
	srv  *Server
	cfg  Config
	name string

	done chan struct{} // closed by Close
	// routines counts every goroutine of the Coordinator's sessions.
	routines goroutines.Group

	closeOnce sync.Once
}

var _ coord.Coordinator = (*Coordinator)(nil)

// New returns a Coordinator connected to srv. It does no I/O: a cut link
// shows in its calls, not here.
func New(srv *Server, cfg Config) (*Coordinator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.DriftMargin == 0 {
		cfg.DriftMargin = DefaultConfig().DriftMargin
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.System()
	}
	name := cfg.Name
	if name == "" {
		srv.mu.Lock()
		srv.conns++
		name = fmt.Sprintf("conn-%d", srv.conns)
		srv.mu.Unlock()
	}
	return &Coordinator{srv: srv, cfg: cfg, name: name, done: make(chan struct{})}, nil
}

// Connect returns a Coordinator named name with the other fields of
// DefaultConfig (use New for another clock or drift margin).
func (s *Server) Connect(name string) *Coordinator {
	c, err := New(s, Config{Name: name})
	if err != nil {
		panic(err) // the defaults are valid
	}
	return c
}

// Name is the connection's name (Config.Name, or the one it was given).
func (c *Coordinator) Name() string { return c.name }

// Server is the Server c is connected to.
func (c *Coordinator) Server() *Server { return c.srv }

// Cut cuts c's connection, and every other of its name: Server.Cut.
func (c *Coordinator) Cut() { c.srv.Cut(c.name) }

// Heal restores c's connection, and every other of its name: Server.Heal.
func (c *Coordinator) Heal() { c.srv.Heal(c.name) }

// ExpireSessions expires on the server every session opened by a
// Coordinator of c's name: Server.ExpireSessions.
func (c *Coordinator) ExpireSessions() int { return c.srv.ExpireSessions(c.name) }

// Close ends every session of c as coord.ErrSessionClosed without telling
// the server (their entries live until their TTL runs out, as after a
// crash), stops their goroutines and waits for them. Close is idempotent.
func (c *Coordinator) Close() error {
	c.closeOnce.Do(func() {
		c.routines.Close()
		close(c.done)
		c.routines.Wait()
	})
	return nil
}

// call runs f on the server's state as a request of c, waiting while the
// connection is cut. It fails if ctx ends or c closes first.
func (c *Coordinator) call(ctx context.Context, f func()) error {
	for {
		select {
		case <-c.done:
			return errClosed
		default:
		}
		ran, changed := c.srv.do(c.name, f)
		if ran {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("memcoord: connection %s cut: %w", c.name, ctx.Err())
		case <-c.done:
			return errClosed
		}
	}
}

// tryCall runs f as call does, but only if the connection is up now.
func (c *Coordinator) tryCall(f func()) bool {
	select {
	case <-c.done:
		return false
	default:
	}
	ran, _ := c.srv.do(c.name, f)
	return ran
}

// liveFor is how long after a keep-alive is sent the session is known live.
func (c *Coordinator) liveFor(ttl time.Duration) time.Duration {
	return time.Duration(float64(ttl) * (1 - c.cfg.DriftMargin))
}

// Voters implements coord.Coordinator.
func (c *Coordinator) Voters(ctx context.Context) (coord.Voters, error) {
	var v coord.Voters
	if err := c.call(ctx, func() { v = c.srv.votersLocked() }); err != nil {
		return coord.Voters{}, fmt.Errorf("memcoord: read voters: %w", err)
	}
	return v, nil
}

// CreateVoters implements coord.Coordinator.
func (c *Coordinator) CreateVoters(ctx context.Context, ids []string) error {
	var werr error
	if err := c.call(ctx, func() { werr = c.srv.writeVotersLocked(0, ids, true) }); err != nil {
		return fmt.Errorf("memcoord: create voters: %w", err)
	}
	if werr != nil {
		return fmt.Errorf("memcoord: create voters: record exists: %w", werr)
	}
	return nil
}

// ReplaceVoters implements coord.Coordinator.
func (c *Coordinator) ReplaceVoters(ctx context.Context, prev coord.Voters, ids []string) error {
	var werr error
	if err := c.call(ctx, func() { werr = c.srv.writeVotersLocked(prev.Version, ids, false) }); err != nil {
		return fmt.Errorf("memcoord: replace voters: %w", err)
	}
	return werr
}

// ClaimCluster implements coord.Coordinator.
func (c *Coordinator) ClaimCluster(ctx context.Context, name string) (string, error) {
	if name == "" {
		return "", errors.New("memcoord: claim cluster: empty name")
	}
	inc, err := coord.NewIncarnation()
	if err != nil {
		return "", err
	}
	var got string
	var cerr error
	if err := c.call(ctx, func() { got, cerr = c.srv.claimClusterLocked(name, inc) }); err != nil {
		return "", fmt.Errorf("memcoord: claim cluster %q: %w", name, err)
	}
	return got, cerr
}

// Settings implements coord.Coordinator.
func (c *Coordinator) Settings(ctx context.Context) (coord.Settings, error) {
	var s coord.Settings
	if err := c.call(ctx, func() { s = c.srv.settings }); err != nil {
		return coord.Settings{}, fmt.Errorf("memcoord: read settings: %w", err)
	}
	return s, nil
}

// ClaimSettings implements coord.Coordinator.
func (c *Coordinator) ClaimSettings(ctx context.Context, s coord.Settings) (coord.Settings, error) {
	if err := s.Validate(); err != nil {
		return coord.Settings{}, err
	}
	var got coord.Settings
	if err := c.call(ctx, func() { got = c.srv.claimSettingsLocked(s) }); err != nil {
		return coord.Settings{}, fmt.Errorf("memcoord: claim settings: %w", err)
	}
	return got, nil
}

// SetSettings implements coord.Coordinator.
func (c *Coordinator) SetSettings(ctx context.Context, prev, next coord.Settings) error {
	if err := next.Validate(); err != nil {
		return err
	}
	var serr error
	if err := c.call(ctx, func() { serr = c.srv.setSettingsLocked(prev.Version, next) }); err != nil {
		return fmt.Errorf("memcoord: set settings: %w", err)
	}
	return serr
}

// EpochBase implements coord.Coordinator.
func (c *Coordinator) EpochBase(ctx context.Context) (int64, error) {
	var base int64
	if err := c.call(ctx, func() { base = c.srv.epochBase }); err != nil {
		return 0, fmt.Errorf("memcoord: read the epoch base: %w", err)
	}
	return base, nil
}

// RaiseEpochBase implements coord.Coordinator.
func (c *Coordinator) RaiseEpochBase(ctx context.Context, base int64) error {
	if base < 0 {
		return fmt.Errorf("memcoord: raise the epoch base: %d is negative", base)
	}
	if err := c.call(ctx, func() { c.srv.raiseEpochBaseLocked(base) }); err != nil {
		return fmt.Errorf("memcoord: raise the epoch base to %d: %w", base, err)
	}
	return nil
}
