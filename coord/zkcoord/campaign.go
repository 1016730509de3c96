package zkcoord

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-zookeeper/zk"

	"github.com/kvstore/kvstore/coord"
)

// seqDigits is how many digits ZooKeeper appends to a sequential znode.
const seqDigits = 10

// candidacy is one entry in the election: an ephemeral sequential znode
// named election/n_<guid>_<seq>. The guid finds the znode again when the
// connection broke before the create's answer came back (the "protected"
// create of the ZooKeeper recipes), so no orphan candidate is left behind
// to block the election until the session ends.
type candidacy struct {
	s    *session
	id   string
	name string // the znode name before the sequence number

	// pending is the create in flight, if any; withdraw waits for it, so
	// that no create can land after the withdrawal.
	pending   chan createResult
	path      string // our znode, once known
	uncertain bool   // a create may have succeeded without us learning its path
}

type createResult struct {
	path string
	err  error
}

func newCandidacy(s *session, id string) *candidacy {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return &candidacy{s: s, id: id, name: "n_" + hex.EncodeToString(b[:]) + "_"}
}

// candidate is an election znode: its name and sequence number.
type candidate struct {
	name string
	seq  int64
}

// sortCandidates parses and orders election znode names by sequence number,
// ignoring names that are not candidates.
func sortCandidates(names []string) []candidate {
	out := make([]candidate, 0, len(names))
	for _, n := range names {
		if len(n) <= seqDigits {
			continue
		}
		seq, err := strconv.ParseInt(n[len(n)-seqDigits:], 10, 64)
		if err != nil {
			continue
		}
		out = append(out, candidate{name: n, seq: seq})
	}
	slices.SortFunc(out, func(a, b candidate) int { return int(a.seq - b.seq) })
	return out
}

// run enters the election and waits until our znode is the lowest, watching
// only its predecessor (no herd effect: one candidate wakes per departure).
// It records the win as the session's leadership and returns it.
func (c *candidacy) run(ctx context.Context) (*leadership, error) {
	s := c.s
	if err := c.create(ctx); err != nil {
		return nil, err
	}
	own := c.path[strings.LastIndexByte(c.path, '/')+1:]
	for {
		var names []string
		err := s.call(ctx, "campaign: list candidates", func() (err error) {
			names, _, err = s.l.conn.Children(s.c.paths.election)
			return err
		})
		if err != nil {
			if err := c.retryable(ctx, err); err != nil {
				return nil, err
			}
			continue
		}
		cands := sortCandidates(names)
		i := slices.IndexFunc(cands, func(x candidate) bool { return x.name == own })
		switch {
		case i < 0:
			return nil, fmt.Errorf("zkcoord: campaign: election znode %s vanished: %w", c.path, coord.ErrNotLeader)
		case i == 0:
			return c.claim(ctx)
		}
		// A data watch, not an exists watch: on a predecessor that is
		// gone already it sets nothing (an exists watch would wait for a
		// name that is never reused).
		pred := s.c.paths.election + "/" + cands[i-1].name
		var ch <-chan zk.Event
		err = s.call(ctx, "campaign: watch predecessor", func() (err error) {
			_, _, ch, err = s.l.conn.GetW(pred)
			return err
		})
		if errors.Is(err, zk.ErrNoNode) {
			continue
		}
		if err != nil {
			if err := c.retryable(ctx, err); err != nil {
				return nil, err
			}
			continue
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, fmt.Errorf("zkcoord: campaign: %w", ctx.Err())
		}
	}
}

// retryable waits before a retry of a failed call and returns nil, or
// returns the error that ends the campaign.
func (c *candidacy) retryable(ctx context.Context, err error) error {
	if ctx.Err() != nil || c.s.Err() != nil {
		return err
	}
	select {
	case <-time.After(retryInterval):
		return nil
	case <-ctx.Done():
		return fmt.Errorf("zkcoord: campaign: %w", ctx.Err())
	}
}

// claim reads our znode's czxid, the epoch, and records the leadership.
func (c *candidacy) claim(ctx context.Context) (*leadership, error) {
	s := c.s
	for {
		var exists bool
		var stat *zk.Stat
		err := s.call(ctx, "campaign: read election znode", func() (err error) {
			exists, stat, err = s.l.conn.Exists(c.path)
			return err
		})
		if err != nil {
			if err := c.retryable(ctx, err); err != nil {
				return nil, err
			}
			continue
		}
		if !exists {
			return nil, fmt.Errorf("zkcoord: campaign: election znode %s vanished: %w", c.path, coord.ErrNotLeader)
		}
		won := &leadership{path: c.path, epoch: stat.Czxid}
		if err := s.Claim(won); err != nil {
			return nil, fmt.Errorf("zkcoord: campaign: %w", err)
		}
		return won, nil
	}
}

// create creates our candidate znode. When the answer is lost (the
// connection broke), it looks for the znode by its guid before trying again.
func (c *candidacy) create(ctx context.Context) error {
	s := c.s
	prefix := s.c.paths.election + "/" + c.name
	for {
		if c.uncertain {
			p, err := c.lookup(ctx)
			if err != nil {
				if err := c.retryable(ctx, err); err != nil {
					return err
				}
				continue
			}
			c.uncertain = false
			if p != "" {
				c.path = p
				return nil
			}
		}
		res := make(chan createResult, 1)
		c.pending = res
		if !s.c.routines.Go(nil, func() {
			p, err := s.l.conn.Create(prefix, []byte(c.id), zk.FlagEphemeral|zk.FlagSequence, s.c.acl)
			res <- createResult{p, err}
		}) {
			c.pending = nil
			return fmt.Errorf("zkcoord: campaign: %w", errClosed)
		}
		select {
		case r := <-res:
			c.pending = nil
			if r.err == nil {
				c.path = r.path
				return nil
			}
			if errors.Is(r.err, zk.ErrSessionExpired) {
				s.expired()
				return fmt.Errorf("zkcoord: campaign: %w: %w", coord.ErrSessionExpired, r.err)
			}
			if lostAnswer(r.err) {
				c.uncertain = true
			}
			if err := c.retryable(ctx, fmt.Errorf("zkcoord: campaign: create candidate: %w", r.err)); err != nil {
				return err
			}
		case <-ctx.Done():
			return fmt.Errorf("zkcoord: campaign: %w", ctx.Err())
		}
	}
}

// lostAnswer reports whether err leaves a request's effect unknown: the
// connection broke after it may have been sent.
func lostAnswer(err error) bool {
	return errors.Is(err, zk.ErrConnectionClosed) || errors.Is(err, zk.ErrClosing) || errors.Is(err, zk.ErrNoServer)
}

// lookup finds our znode by its guid; "" if there is none. It syncs first:
// the lost create may have gone through another server, and once the
// session has moved to this one, ZooKeeper refuses any request still coming
// from the old one, so after the sync the answer is final.
func (c *candidacy) lookup(ctx context.Context) (string, error) {
	s := c.s
	var names []string
	err := s.call(ctx, "campaign: look for own candidate", func() (err error) {
		if _, err := s.l.conn.Sync(s.c.paths.election); err != nil {
			return err
		}
		names, _, err = s.l.conn.Children(s.c.paths.election)
		return err
	})
	if err != nil {
		return "", err
	}
	for _, n := range names {
		if strings.HasPrefix(n, c.name) {
			return s.c.paths.election + "/" + n, nil
		}
	}
	return "", nil
}

// withdraw deletes our znode, waiting first for a create still in flight.
// It keeps trying while the session lives; once it ends, ZooKeeper deletes
// the znode with the session.
func (c *candidacy) withdraw() {
	s := c.s
	if c.pending != nil {
		select {
		case r := <-c.pending:
			c.pending = nil
			if r.err == nil {
				c.path = r.path
			} else if lostAnswer(r.err) {
				c.uncertain = true
			}
		case <-s.Context().Done():
			return
		}
	}
	for s.Context().Err() == nil {
		if c.path == "" && c.uncertain {
			p, err := c.lookup(s.Context())
			if err != nil {
				_ = c.retryable(s.Context(), err)
				continue
			}
			c.path, c.uncertain = p, false
		}
		if c.path == "" {
			return
		}
		err := s.call(s.Context(), "campaign: withdraw", func() error { return s.l.conn.Delete(c.path, -1) })
		if err == nil || errors.Is(err, zk.ErrNoNode) {
			c.path = ""
			return
		}
		_ = c.retryable(s.Context(), err)
	}
}
