package memcoord

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/kvstore/kvstore/coord"
)

// errSessionGone is the server's answer for a session it does not hold
// (expired, revoked, or wiped by Rebuild).
var errSessionGone = errors.New("memcoord: the server holds no such session")

// Server is the coordination service itself: the state every Coordinator
// connected to it shares (sessions and their expiry, membership, the
// election, the voter record, the cluster record, the settings and the epoch
// base), and the network between it and its clients, which the fault hooks
// (Cut, Heal, ExpireSessions, Rebuild) break. One Server is one namespace.
//
// Session expiry runs on the time package (time.AfterFunc): inside a
// testing/synctest bubble it runs on the bubble's virtual time, so create
// the Server, and its Coordinators, inside the bubble. A Server starts no
// goroutine of its own; a session's expiry timer runs its callback briefly
// and returns. The zero value is not usable: call NewServer.
type Server struct {
	mu sync.Mutex // guards every field below
	// rev counts writes; every write takes the next revision, which is
	// the epoch of a new candidacy and the version of a written record.
	// Rebuild sets it back to 0, as a new etcd starts at revision 1.
	rev int64
	// nextSession numbers sessions. Rebuild keeps it: a session of the
	// old data must never match one of the new.
	nextSession int64
	sessions    map[int64]*serverSession
	members     map[string]member
	candidates  []candidate // in entry order: the first leads
	voters      coord.Voters
	cluster     string
	incarnation string
	settings    coord.Settings
	epochBase   int64
	// changed is closed and replaced on every write: watchers and
	// campaigns wait on it.
	changed chan struct{}
	// links are the clients' connections by name; absent means up.
	links map[string]*link
	// conns numbers the connections New names itself.
	conns int
}

// serverSession is a session as the server holds it.
type serverSession struct {
	id      int64
	owner   string // the name of the connection that opened it
	ttl     time.Duration
	expires time.Time // on the time package's clock
	timer   *time.Timer
}

// member is one membership entry, owned by a session.
type member struct {
	addr string
	sid  int64
}

// candidate is one session's entry in the election.
type candidate struct {
	sid   int64
	id    string
	epoch int64 // the revision that created it
}

// link is the state of the connections of one name.
type link struct {
	cut     bool
	changed chan struct{} // closed and replaced when cut changes
}

// NewServer returns an empty Server: no sessions, no records, every link up.
func NewServer() *Server {
	s := &Server{links: make(map[string]*link)}
	s.wipeLocked()
	return s
}

// wipeLocked empties the data. s.mu must be held.
func (s *Server) wipeLocked() {
	for _, ss := range s.sessions {
		ss.timer.Stop()
	}
	s.rev = 0
	s.sessions = make(map[int64]*serverSession)
	s.members = make(map[string]member)
	s.candidates = nil
	s.voters = coord.Voters{}
	s.cluster, s.incarnation = "", ""
	s.settings = coord.Settings{}
	s.epochBase = 0
	if s.changed != nil {
		close(s.changed)
	}
	s.changed = make(chan struct{})
}

// notifyLocked wakes everyone waiting for a change. s.mu must be held.
func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

// nextRevLocked takes the next revision. s.mu must be held.
func (s *Server) nextRevLocked() int64 {
	s.rev++
	return s.rev
}

// linkLocked returns the link of name, creating it. s.mu must be held.
func (s *Server) linkLocked(name string) *link {
	l, ok := s.links[name]
	if !ok {
		l = &link{changed: make(chan struct{})}
		s.links[name] = l
	}
	return l
}

// linkState reports whether name's connections reach the server, and a
// channel closed when that next changes.
func (s *Server) linkState(name string) (up bool, changed <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.linkLocked(name)
	return !l.cut, l.changed
}

// do runs f on the server's state, under its lock, as a request from a
// connection named name, unless that connection is cut. It reports whether
// f ran, and otherwise returns a channel closed when the link next changes.
func (s *Server) do(name string, f func()) (ran bool, linkChanged <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.linkLocked(name); l.cut {
		return false, l.changed
	}
	f()
	return true, nil
}

// Cut cuts the connections of every Coordinator named name (Config.Name),
// present and future, from the server, as a network partition would: their
// calls block until Heal (or until their ctx ends), their watches deliver
// nothing, and their sessions' keep-alives stop, so each session turns
// unhealthy at once, ends as coord.ErrSessionExpired when its local
// deadline passes, and expires on the server a TTL after its last
// keep-alive arrived. The server's state is untouched. Cutting a cut name
// changes nothing.
func (s *Server) Cut(name string) { s.setCut(name, true) }

// Heal restores the connections Cut cut: blocked calls go through, watches
// deliver the current View, and a session the server still holds renews at
// once (Healthy again) unless its local deadline has passed meanwhile.
func (s *Server) Heal(name string) { s.setCut(name, false) }

func (s *Server) setCut(name string, cut bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.linkLocked(name)
	if l.cut == cut {
		return
	}
	l.cut = cut
	close(l.changed)
	l.changed = make(chan struct{})
}

// IsCut reports whether name's connections are cut.
func (s *Server) IsCut(name string) bool {
	up, _ := s.linkState(name)
	return !up
}

// ExpireSessions expires at once, on the server, every session opened by a
// Coordinator named name, before its TTL has run out: as an operator who
// revokes a lease or deletes a session by hand would. That breaks
// coord.Session's contract (a session the client still holds is live until
// its local deadline), and KVStore's no-stale-read promise rests on it:
// the simulation shows a node so expired serving a stale cached copy
// (robustness/sim TestSimulationFindsImmediateExpiry). A coordinator that
// merely stops hearing from a client is a Cut. Membership and election
// entries vanish in one change, and each client learns it at its next
// keep-alive or call (the session ends with coord.ErrSessionExpired). It
// returns how many sessions expired.
func (s *Server) ExpireSessions(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ss := range s.sessions {
		if ss.owner == name {
			s.dropSessionLocked(ss)
			n++
		}
	}
	if n > 0 {
		s.notifyLocked()
	}
	return n
}

// Rebuild wipes the server's data, as a coordinator rebuilt from nothing:
// every session, membership and election entry, the voter record, the
// cluster record (the next ClaimCluster creates it with a new incarnation),
// the settings and the epoch base are gone, and raw epochs and versions
// start low again. Clients learn it as from ExpireSessions. Links keep
// their state.
func (s *Server) Rebuild() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wipeLocked()
}

// Sessions returns how many sessions the server holds that were opened by a
// Coordinator named name.
func (s *Server) Sessions(name string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ss := range s.sessions {
		if ss.owner == name {
			n++
		}
	}
	return n
}

// View returns the current View as the server holds it, links aside: what
// a connected watcher receives next.
func (s *Server) View() coord.View {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.viewLocked()
}

// viewLocked builds the current View. s.mu must be held.
func (s *Server) viewLocked() coord.View {
	v := coord.View{Members: make(map[string]string, len(s.members))}
	for id, m := range s.members {
		v.Members[id] = m.addr
	}
	if len(s.candidates) > 0 {
		c := s.candidates[0]
		v.Leader = coord.Leader{ID: c.id, Epoch: c.epoch}
	}
	return v
}

// viewsEqual reports whether a and b show the same cluster.
func viewsEqual(a, b coord.View) bool {
	return a.Leader == b.Leader && maps.Equal(a.Members, b.Members)
}

// openSessionLocked creates a session of ttl for owner and arms its expiry.
// s.mu must be held.
func (s *Server) openSessionLocked(owner string, ttl time.Duration) int64 {
	s.nextSession++
	ss := &serverSession{id: s.nextSession, owner: owner, ttl: ttl, expires: time.Now().Add(ttl)}
	ss.timer = time.AfterFunc(ttl, func() { s.expire(ss) })
	s.sessions[ss.id] = ss
	return ss.id
}

// expire is the expiry timer's callback: it drops ss unless a keep-alive
// moved its expiry on meanwhile (then it re-arms the timer).
func (s *Server) expire(ss *serverSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[ss.id] != ss {
		return
	}
	if left := time.Until(ss.expires); left > 0 {
		ss.timer.Reset(left)
		return
	}
	s.dropSessionLocked(ss)
	s.notifyLocked()
}

// keepAliveLocked renews session sid. s.mu must be held.
func (s *Server) keepAliveLocked(sid int64) error {
	ss, ok := s.sessions[sid]
	if !ok {
		return errSessionGone
	}
	ss.expires = time.Now().Add(ss.ttl)
	ss.timer.Reset(ss.ttl)
	return nil
}

// dropSessionLocked deletes session ss and its ephemeral entries, all in
// one change; the caller notifies. s.mu must be held.
func (s *Server) dropSessionLocked(ss *serverSession) {
	ss.timer.Stop()
	delete(s.sessions, ss.id)
	for id, m := range s.members {
		if m.sid == ss.id {
			delete(s.members, id)
		}
	}
	s.candidates = slices.DeleteFunc(s.candidates, func(c candidate) bool { return c.sid == ss.id })
	s.nextRevLocked()
}

// revokeLocked deletes session sid and its entries, if the server holds it.
// s.mu must be held.
func (s *Server) revokeLocked(sid int64) {
	if ss, ok := s.sessions[sid]; ok {
		s.dropSessionLocked(ss)
		s.notifyLocked()
	}
}

// registerLocked puts id -> addr, owned by session sid (taking it over from
// whichever session owned it). s.mu must be held.
func (s *Server) registerLocked(sid int64, m coord.Member) error {
	if _, ok := s.sessions[sid]; !ok {
		return errSessionGone
	}
	s.members[m.ID] = member{addr: m.Addr, sid: sid}
	s.nextRevLocked()
	s.notifyLocked()
	return nil
}

// enterLocked enters session sid in the election as id, or finds its entry
// (then proclaims id), and returns the entry's epoch. s.mu must be held.
func (s *Server) enterLocked(sid int64, id string) (int64, error) {
	if _, ok := s.sessions[sid]; !ok {
		return 0, errSessionGone
	}
	for i, c := range s.candidates {
		if c.sid == sid {
			if c.id != id {
				s.candidates[i].id = id
				s.nextRevLocked()
				s.notifyLocked()
			}
			return c.epoch, nil
		}
	}
	epoch := s.nextRevLocked()
	s.candidates = append(s.candidates, candidate{sid: sid, id: id, epoch: epoch})
	s.notifyLocked()
	return epoch, nil
}

// leadsLocked reports whether session sid's entry with epoch leads the
// election. errSessionGone: the session is gone; coord.ErrNotLeader: its
// entry is. s.mu must be held.
func (s *Server) leadsLocked(sid, epoch int64) (bool, error) {
	if _, ok := s.sessions[sid]; !ok {
		return false, errSessionGone
	}
	for i, c := range s.candidates {
		if c.sid == sid && c.epoch == epoch {
			return i == 0, nil
		}
	}
	return false, fmt.Errorf("memcoord: election entry of epoch %d vanished: %w", epoch, coord.ErrNotLeader)
}

// withdrawLocked deletes session sid's election entry if it has epoch.
// s.mu must be held.
func (s *Server) withdrawLocked(sid, epoch int64) {
	n := len(s.candidates)
	s.candidates = slices.DeleteFunc(s.candidates, func(c candidate) bool { return c.sid == sid && c.epoch == epoch })
	if len(s.candidates) != n {
		s.nextRevLocked()
		s.notifyLocked()
	}
}

// setVotersLocked writes ids, sealed, if session sid leads with epoch and
// the record still has version prev. s.mu must be held.
func (s *Server) setVotersLocked(sid, epoch, prev int64, ids []string) error {
	leads, err := s.leadsLocked(sid, epoch)
	if err != nil {
		return err
	}
	if !leads {
		return fmt.Errorf("memcoord: set voters: an older candidate leads, not epoch %d: %w", epoch, coord.ErrNotLeader)
	}
	return s.writeVotersLocked(prev, ids, false)
}

// writeVotersLocked writes the voter record if it still has version prev
// (0: none exists). s.mu must be held.
func (s *Server) writeVotersLocked(prev int64, ids []string, unsealed bool) error {
	if s.voters.Version != prev {
		return fmt.Errorf("memcoord: voters: version %d is stale (the record has %d): %w", prev, s.voters.Version, coord.ErrConflict)
	}
	if ids == nil {
		ids = []string{}
	}
	s.voters = coord.Voters{IDs: slices.Clone(ids), Version: s.nextRevLocked(), Unsealed: unsealed}
	s.notifyLocked()
	return nil
}

// votersLocked returns a copy of the voter record. s.mu must be held.
func (s *Server) votersLocked() coord.Voters {
	v := s.voters
	v.IDs = slices.Clone(v.IDs)
	return v
}

// claimClusterLocked records name and a new incarnation inc if no cluster
// is recorded, and returns the recorded incarnation. s.mu must be held.
func (s *Server) claimClusterLocked(name, inc string) (string, error) {
	switch s.cluster {
	case "":
		s.cluster, s.incarnation = name, inc
		s.nextRevLocked()
		s.notifyLocked()
	case name:
	default:
		return "", fmt.Errorf("memcoord: the server belongs to cluster %q, not %q: %w", s.cluster, name, coord.ErrOtherCluster)
	}
	return s.incarnation, nil
}

// claimSettingsLocked records st if no settings are, and returns the
// record. s.mu must be held.
func (s *Server) claimSettingsLocked(st coord.Settings) coord.Settings {
	if s.settings.Version == 0 {
		st.Version = s.nextRevLocked()
		s.settings = st
		s.notifyLocked()
	}
	return s.settings
}

// setSettingsLocked replaces the settings if they still have version prev.
// s.mu must be held.
func (s *Server) setSettingsLocked(prev int64, next coord.Settings) error {
	if prev <= 0 || s.settings.Version != prev {
		return fmt.Errorf("memcoord: set settings: version %d is stale (the record has %d): %w", prev, s.settings.Version, coord.ErrConflict)
	}
	next.Version = s.nextRevLocked()
	s.settings = next
	s.notifyLocked()
	return nil
}

// raiseEpochBaseLocked raises the epoch base to base if that is higher.
// s.mu must be held.
func (s *Server) raiseEpochBaseLocked(base int64) {
	if base > s.epochBase {
		s.epochBase = base
		s.nextRevLocked()
		s.notifyLocked()
	}
}
