package etcdcoord

import (
	"context"
	"maps"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvstore/kvstore/coord"
)

// Re-watch backoff bounds, after a watch breaks (compaction, lost leader,
// connection trouble).
const (
	watchRetryMin = 50 * time.Millisecond
	watchRetryMax = time.Second
)

// viewState is the part of the keyspace a View is built from, maintained
// from a Get and then from watch events.
type viewState struct {
	keys       keys
	members    map[string]string    // id -> addr
	candidates map[string]candidate // election key -> candidate
}

type candidate struct {
	id  string
	rev int64 // create revision
}

func newViewState(k keys) *viewState {
	return &viewState{keys: k, members: map[string]string{}, candidates: map[string]candidate{}}
}

func (st *viewState) put(kv *mvccpb.KeyValue) {
	key := string(kv.Key)
	if id, ok := strings.CutPrefix(key, st.keys.members); ok {
		st.members[id] = string(kv.Value)
	} else if strings.HasPrefix(key, st.keys.elecDir) {
		st.candidates[key] = candidate{id: string(kv.Value), rev: kv.CreateRevision}
	}
}

func (st *viewState) del(key string) {
	if id, ok := strings.CutPrefix(key, st.keys.members); ok {
		delete(st.members, id)
	} else {
		delete(st.candidates, key)
	}
}

// view builds a View: the leader is the candidate with the lowest create
// revision, which is also the epoch. Members is a fresh map.
func (st *viewState) view() coord.View {
	var leader coord.Leader
	for _, c := range st.candidates {
		if leader.Epoch == 0 || c.rev < leader.Epoch {
			leader = coord.Leader{ID: c.id, Epoch: c.rev}
		}
	}
	return coord.View{Leader: leader, Members: maps.Clone(st.members)}
}

// watchView sends a full View on out at once and after every change, until
// ctx ends. A broken watch is re-established from a fresh Get, with backoff.
func (c *Coordinator) watchView(ctx context.Context, out chan coord.View) {
	var last *coord.View
	send := func(v coord.View) {
		if last != nil && last.Leader == v.Leader && maps.Equal(last.Members, v.Members) {
			return
		}
		last = &v
		coord.SendLatest(out, v)
	}
	retry := watchRetryMin
	for ctx.Err() == nil {
		if c.watchOnce(ctx, send) {
			retry = watchRetryMin
		}
		select {
		case <-ctx.Done():
		case <-time.After(retry):
		}
		retry = min(2*retry, watchRetryMax)
	}
}

// Progress checks of a watch: every progressEvery the watch asks etcd for
// a progress notification (unless one is outstanding); a watch that hears
// nothing for progressWait after asking is stuck (its stream is on a member
// that stopped answering) and is opened again, on a new stream.
const (
	progressEvery = 250 * time.Millisecond
	progressWait  = 750 * time.Millisecond
)

// watchOnce reads the whole prefix, then follows it with a watch until the
// watch breaks, stops making progress, or ctx ends. It reports whether the
// read succeeded.
func (c *Coordinator) watchOnce(ctx context.Context, send func(coord.View)) bool {
	var resp *clientv3.GetResponse
	err := c.retry(ctx, func(ctx context.Context) error {
		var err error
		resp, err = c.client.Get(ctx, c.keys.prefix, clientv3.WithPrefix())
		return err
	})
	if err != nil {
		return false
	}
	st := newViewState(c.keys)
	for _, kv := range resp.Kvs {
		st.put(kv)
	}
	send(st.view())

	// From the read's own revision, not the next: etcd answers a progress
	// request only for watches that start at or before its current
	// revision. The events of that revision are in the read already;
	// applying them again changes nothing.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wctx, note := withPickNote(wctx)
	wctx = ownStream(clientv3.WithRequireLeader(wctx))
	// Watch returns once the watch is registered on its stream, which
	// waits, as long as wctx lasts, for a stream that a member that stops
	// answering never opens: it gets progressWait.
	opened := make(chan clientv3.WatchChan, 1)
	go func() {
		opened <- c.client.Watch(wctx, c.keys.prefix, clientv3.WithPrefix(), clientv3.WithRev(resp.Header.Revision))
	}()
	var wch clientv3.WatchChan
	openWait := time.NewTimer(progressWait)
	select {
	case wch = <-opened:
		openWait.Stop()
	case <-openWait.C:
		c.markStalled(note)
		cancel()
		<-opened
		return true
	}
	tick := time.NewTicker(progressEvery)
	defer tick.Stop()
	var asked time.Time // when the unanswered progress request was sent; zero if none
	for {
		select {
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				return true
			}
			asked = time.Time{}
			for _, ev := range wr.Events {
				switch ev.Type {
				case mvccpb.PUT:
					st.put(ev.Kv)
				case mvccpb.DELETE:
					st.del(string(ev.Kv.Key))
				}
			}
			send(st.view())
		case <-tick.C:
			if asked.IsZero() {
				asked = time.Now()
				// A context derived from the watch's carries its
				// metadata: the request goes on the watch's stream. It
				// can block while that stream is being opened on a
				// member that does not answer, so it is bounded. An
				// error is a closed watch, which the channel reports,
				// or a stuck one, found below.
				pctx, pcancel := context.WithTimeout(wctx, progressWait)
				_ = c.client.RequestProgress(pctx)
				pcancel()
			}
			if time.Since(asked) > progressWait {
				// Stuck: watch again, on a new stream, and not on
				// this member until it answers.
				c.markStalled(note)
				return true
			}
		}
	}
}
