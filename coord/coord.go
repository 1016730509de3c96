// Package coord defines the coordination service KVStore relies on: sessions
// with a local deadline, ephemeral membership, leader election with a strictly
// increasing epoch, and the persistent voter record. The KV data never lives in
// the coordinator.
//
// Backends live in sub-packages (etcdcoord, zkcoord, and memcoord, in
// memory, for tests and simulations). Every backend must pass the
// conformance suite in coordtest.
package coord

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/kvstore/kvstore/clock"
)

// Sentinel errors returned by backends. Match them with errors.Is.
var (
	// ErrSessionExpired means the coordinator no longer holds the session: its
	// ephemeral entries are gone and it will never come back.
	ErrSessionExpired = errors.New("coord: session expired")
	// ErrSessionClosed means the session was closed by its owner.
	ErrSessionClosed = errors.New("coord: session closed")
	// ErrNotLeader means a fenced write was refused because the caller's
	// election entry no longer exists or no longer carries the given epoch.
	ErrNotLeader = errors.New("coord: not the leader (fencing check failed)")
	// ErrConflict means a compare-and-swap lost: the record changed since it
	// was read.
	ErrConflict = errors.New("coord: record changed concurrently")
	// ErrOtherCluster means the coordinator prefix is recorded as another
	// cluster's: a node configured for one cluster was pointed at the
	// namespace of another.
	ErrOtherCluster = errors.New("coord: the coordinator prefix belongs to another cluster")
)

// Coordinator is a connection to the coordination service. It is safe for
// concurrent use. Close releases the connection; sessions opened from it must
// be closed (or abandoned) first.
type Coordinator interface {
	// NewSession opens a session whose ephemeral entries live while the
	// coordinator hears from it at least once per ttl.
	NewSession(ctx context.Context, ttl time.Duration) (Session, error)
	// Voters reads the voter record. A record that was never written is
	// returned as Voters{} with Version 0 and no error.
	Voters(ctx context.Context) (Voters, error)
	// CreateVoters writes the first voter record, unsealed (Voters.Unsealed);
	// it fails with ErrConflict if one exists already. Used once, by the
	// node that bootstraps the cluster.
	CreateVoters(ctx context.Context, ids []string) error
	// ClaimCluster records name as the cluster that owns the coordinator
	// prefix if no cluster is recorded there yet, and otherwise checks the
	// recorded name. It fails with ErrOtherCluster, wrapped with both names,
	// if another name is recorded. The record is persistent and never
	// changes once written; claiming the same name again succeeds.
	//
	// It returns the cluster's incarnation: a random id (NewIncarnation)
	// created with the record by the first claim, or, for a record written
	// before incarnations existed, by the first claim that finds none
	// (create-if-absent, so concurrent claimers agree). Every claim of the
	// same record returns the same incarnation; a record created anew
	// (a rebuilt coordinator, another prefix) has a new one. Nodes fence
	// their data directories with it.
	ClaimCluster(ctx context.Context, name string) (incarnation string, err error)
	// Settings reads the cluster's settings record (beside the cluster
	// name, under its own key). A record never written is returned as
	// Settings{} with Version 0 and no error.
	Settings(ctx context.Context) (Settings, error)
	// ClaimSettings records s as the cluster's settings if none are
	// recorded, and returns the recorded settings (s itself, or what was
	// there), with their Version. The caller compares.
	ClaimSettings(ctx context.Context, s Settings) (Settings, error)
	// SetSettings replaces the settings record if it still has version
	// prev.Version; otherwise it fails with ErrConflict. It is the
	// operator's change procedure, not a node's (see Settings.MaxLease).
	SetSettings(ctx context.Context, prev, next Settings) error
	// ReplaceVoters overwrites the voter record if it still has version
	// prev.Version (prev.Version 0: if none exists), with no leader fencing;
	// it fails with ErrConflict otherwise. The record it writes is sealed.
	// Only the disaster-recovery command (a node's ForceNewCluster) uses
	// it, while the cluster is down.
	ReplaceVoters(ctx context.Context, prev Voters, ids []string) error
	// EpochBase reads the epoch base, a persistent record beside the voter
	// record: the number every node adds to the backend's raw election
	// epochs (WithEpochBase), so that epochs stay above those of an earlier
	// coordinator after a rebuild. A base never written is 0, no error.
	EpochBase(ctx context.Context) (int64, error)
	// RaiseEpochBase sets the epoch base to base if that is above the
	// recorded one, and otherwise changes nothing: the base never goes
	// down. It is safe to call concurrently.
	RaiseEpochBase(ctx context.Context, base int64) error
	// Close releases the connection. It does not revoke sessions: a session
	// that is not closed expires by its TTL, as after a crash.
	Close() error
}

// Voters is the persistent voter record: the set of node ids whose majority
// every commit and every takeover needs. Version changes with every write and
// is what compare-and-swap compares.
type Voters struct {
	IDs     []string
	Version int64
	// Unsealed reports that no leader has sealed the record since
	// CreateVoters wrote it: the first leader whose takeover completes
	// seals it (Session.SetVoters with the same ids) before it serves
	// anything, so while it is unsealed no write was ever acknowledged
	// and no voter can have lost one. Every write but CreateVoters's
	// seals the record, and nothing unseals it; a record written before
	// the mark existed reads as sealed. The zero value (sealed) is the
	// cautious one.
	Unsealed bool
}

// Contains reports whether id is a voter.
func (v Voters) Contains(id string) bool {
	for _, x := range v.IDs {
		if x == id {
			return true
		}
	}
	return false
}

// Member is one live node: its id and the address of its node-to-node RPC
// service.
type Member struct {
	ID   string
	Addr string
}

// Leader names the current leader and its epoch. The zero value means no
// leader is known.
type Leader struct {
	ID    string
	Epoch int64
}

// View is what a node observes of the cluster: the current leader (from the
// election) and the live members. Backends deliver a complete View on every
// change, never a delta. A View's Members are at least as recent as its
// Leader: read from the same revision (etcd) or after it (ZooKeeper). A
// node missing from a View that shows a leader so had, when the members
// were read, no live session that registered before that leader's
// predecessor left the election (a new leader's takeover relies on it).
type View struct {
	Leader  Leader
	Members map[string]string // id -> RPC address
}

// Session is one coordinator session. Its ephemeral entries (membership,
// election candidacy) vanish when it ends.
//
// Liveness contract: Deadline is computed on the backend's clock (a
// clock.Clock, by default clock.System(): CLOCK_BOOTTIME on Linux, which
// counts the time the machine spends suspended) from the time the last
// successful keep-alive request was SENT, plus the TTL the coordinator
// granted, minus a drift margin. While that clock's Now is before Deadline
// the coordinator still holds the session, provided clock rates on the two
// machines differ by less than the margin. Callers must never trust a
// "connected" flag instead, and must compare Deadline with readings of the
// same clock.
type Session interface {
	// Deadline is the instant, on the backend's clock, until which the
	// session is known live.
	Deadline() clock.Instant
	// Changed returns a channel that is closed (and replaced) whenever the
	// session's state may have changed: a keep-alive succeeded or failed, the
	// connection was lost or restored, or the session expired.
	Changed() <-chan struct{}
	// Done is closed when the session has ended for good (expired or closed).
	Done() <-chan struct{}
	// Err returns why Done was closed (ErrSessionExpired or ErrSessionClosed), or nil.
	Err() error
	// Healthy reports whether the last keep-alive succeeded and no connection
	// loss has been seen since. It is an early warning, not doubt: Deadline
	// alone says until when the session is live (a node serves on through
	// a blip shorter than that).
	Healthy() bool

	// Register creates the ephemeral membership entry id -> addr.
	Register(ctx context.Context, m Member) error
	// Campaign enters the election as id and blocks until this session leads,
	// then returns the epoch, which is strictly greater than every earlier
	// leader's epoch. It returns an error if ctx ends or the session ends;
	// ended by ctx, it returns once its candidacy is withdrawn (or after
	// about 2 s if the coordinator does not answer), so that no later view
	// shows id leading because of it.
	Campaign(ctx context.Context, id string) (epoch int64, err error)
	// Resign gives up leadership (or candidacy) held by this session.
	Resign(ctx context.Context) error
	// SetVoters replaces the voter record if it still has version
	// prev.Version and this session still leads with epoch (fencing). Errors:
	// ErrConflict, ErrNotLeader. The record it writes is sealed: with ids
	// equal to prev.IDs, that is all it changes (the leader's seal).
	SetVoters(ctx context.Context, epoch int64, prev Voters, ids []string) error
	// Watch delivers the current View at once and then after every change,
	// until ctx ends. The channel is closed when the watch stops.
	Watch(ctx context.Context) <-chan View

	// Close ends the session and deletes its ephemeral entries (best effort,
	// bounded by ctx), all in one step when the coordinator answers (an
	// etcd lease revoke, a ZooKeeper closeSession): no View shows its
	// candidacy gone while its membership stays.
	Close(ctx context.Context) error
}

// SendLatest puts v into the 1-buffered out, replacing a View the receiver
// has not taken yet, so a slow reader never blocks a watch and always gets
// the latest View. It never blocks: the caller must be out's only sender.
func SendLatest(out chan View, v View) {
	select {
	case out <- v:
		return
	default:
	}
	select {
	case <-out:
	default:
	}
	out <- v
}

// NewIncarnation returns a new random cluster incarnation (16 random
// bytes, hex): what a backend's ClaimCluster records with a new cluster
// record.
func NewIncarnation() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("coord: new incarnation: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// AwaitWithdrawal is how a backend's Campaign, ended by its ctx, waits for
// its candidacy to be withdrawn (withdrawn closed) before it returns, so
// that no later View shows the caller leading because of it: at most d,
// for a coordinator that does not answer, and no longer once the session
// has ended (sessionDone closed).
func AwaitWithdrawal(withdrawn, sessionDone <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-withdrawn:
	case <-sessionDone:
	case <-t.C:
	}
}
