package zkcoord

import (
	"context"
	"errors"
	"maps"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/kvstore/kvstore/coord"
)

// Re-read backoff bounds, after a read for a View fails.
const (
	watchRetryMin = 50 * time.Millisecond
	watchRetryMax = time.Second
)

// watchView sends a full View on out at once and after every change, until
// ctx ends. It keeps one child watch on members and one on election, and
// re-reads (and re-arms) the part whose watch fired, the members also
// after every election change; ZooKeeper watches
// survive reconnects (the client sets them again), so a change made while
// the connection was down still fires.
//
// A new session's first reads may reach a server that is behind the one
// an earlier session read from (ZooKeeper orders reads only within a
// session), so a watch opened before anything else on a new session
// could show a view older than the last one its caller saw. A node
// registers first (Register's create is a write, and a server answers
// it only after it applied every transaction before it), so its first
// view is never older than what its previous session showed.
func (s *session) watchView(ctx context.Context, out chan coord.View) {
	var (
		last           *coord.View
		members        map[string]string
		leader         coord.Leader
		memberCh, elCh <-chan zk.Event
	)
	retry := watchRetryMin
	for ctx.Err() == nil {
		// The leader first, then the members: a View's members are read
		// after its leader (coord.View), so a View that shows a new
		// leader lists no member whose session ended before its
		// predecessor's key went. An election change re-reads both.
		var err error
		if elCh == nil {
			leader, elCh, err = s.readLeader(ctx)
			memberCh = nil
		}
		if err == nil && memberCh == nil {
			members, memberCh, err = s.readMembers(ctx)
		}
		if err != nil {
			select {
			case <-ctx.Done():
			case <-time.After(retry):
			}
			retry = min(2*retry, watchRetryMax)
			continue
		}
		retry = watchRetryMin
		v := coord.View{Leader: leader, Members: maps.Clone(members)}
		if last == nil || last.Leader != v.Leader || !maps.Equal(last.Members, v.Members) {
			last = &v
			coord.SendLatest(out, v)
		}
		select {
		case <-memberCh:
			memberCh = nil
		case <-elCh:
			elCh = nil
		case <-ctx.Done():
		}
	}
}

// readMembers lists members/ with a child watch and reads each member's
// address. A member that left meanwhile is skipped: the watch has fired.
func (s *session) readMembers(ctx context.Context) (map[string]string, <-chan zk.Event, error) {
	var names []string
	var ch <-chan zk.Event
	err := s.call(ctx, "watch: list members", func() (err error) {
		names, _, ch, err = s.l.conn.ChildrenW(s.c.paths.members)
		return err
	})
	if err != nil {
		return nil, nil, err
	}
	members := make(map[string]string, len(names))
	for _, id := range names {
		var data []byte
		err := s.call(ctx, "watch: read member", func() (err error) {
			data, _, err = s.l.conn.Get(s.c.paths.members + "/" + id)
			return err
		})
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		members[id] = string(data)
	}
	return members, ch, nil
}

// readLeader lists election/ with a child watch and reads the lowest
// candidate that still exists: its data is the leader's id and its czxid
// the epoch.
func (s *session) readLeader(ctx context.Context) (coord.Leader, <-chan zk.Event, error) {
	var names []string
	var ch <-chan zk.Event
	err := s.call(ctx, "watch: list candidates", func() (err error) {
		names, _, ch, err = s.l.conn.ChildrenW(s.c.paths.election)
		return err
	})
	if err != nil {
		return coord.Leader{}, nil, err
	}
	for _, cand := range sortCandidates(names) {
		var data []byte
		var stat *zk.Stat
		err := s.call(ctx, "watch: read candidate", func() (err error) {
			data, stat, err = s.l.conn.Get(s.c.paths.election + "/" + cand.name)
			return err
		})
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			return coord.Leader{}, nil, err
		}
		return coord.Leader{ID: string(data), Epoch: stat.Czxid}, ch, nil
	}
	return coord.Leader{}, ch, nil
}
