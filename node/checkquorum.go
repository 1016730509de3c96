package node

import (
	"errors"
	"maps"
	"time"

	"github.com/kvstore/kvstore/clock"
	"github.com/kvstore/kvstore/quorum"
)

// errQuorumLost ends a leadership that heard from no majority of the
// voters within the quorum window (CheckQuorum).
var errQuorumLost = errors.New("no majority of the voters answered within the quorum window")

// quorumCheck is the leader's CheckQuorum, as etcd-io/raft's: which
// voters answered lately, and the rule that ends a leadership that heard
// from no majority of them within the quorum window. The leader's l.mu
// guards heard.
type quorumCheck struct {
	l *leader
	// heard maps a voter to the send time of the last Prepare or Append
	// it answered in this epoch (CheckQuorum).
	heard map[string]clock.Instant
}

// window is how long the leader leads on without hearing from a
// majority of the voters (Config.quorumWindow; with Faults.NoCheckQuorum
// the older rule's 2 x QuorumTimeout).
func (q *quorumCheck) window() time.Duration {
	if faultsOn && q.l.n.cfg.Faults.NoCheckQuorum {
		return 2 * q.l.n.cfg.QuorumTimeout
	}
	return q.l.n.cfg.quorumWindow()
}

// hear records that voter id answered a Prepare or Append sent at sent.
func (q *quorumCheck) hear(id string, sent clock.Instant) {
	q.l.mu.Lock()
	defer q.l.mu.Unlock()
	q.hearLocked(id, sent)
}

// hearLocked is hear for a caller that holds l.mu.
func (q *quorumCheck) hearLocked(id string, sent clock.Instant) {
	if sent.After(q.heard[id]) {
		q.heard[id] = sent
	}
}

// lost reports whether the leader, elected more than a quorum window ago,
// heard from no majority of the voters (itself included) within the last
// window (CheckQuorum).
func (q *quorumCheck) lost() bool {
	l := q.l
	l.mu.Lock()
	defer l.mu.Unlock()
	return quorumLost(l.n.cfg.ID, l.voters.IDs, q.heard, l.electedAt, l.n.now(), q.window())
}

// quorumLost is the CheckQuorum rule, a pure function: a leader (self)
// elected at electedAt, more than window before now, steps down if the
// voters it heard from within the last window (heard: the send time of
// the last request each answered), itself included, are no majority.
func quorumLost(self string, voters []string, heard map[string]clock.Instant, electedAt, now clock.Instant, window time.Duration) bool {
	if now.Sub(electedAt) <= window {
		return false
	}
	heard = maps.Clone(heard)
	if heard == nil {
		heard = make(map[string]clock.Instant)
	}
	heard[self] = now
	return !quorum.HeardSince(voters, heard, now.Add(-window))
}
