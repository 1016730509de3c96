package node

import (
	"fmt"
	"unicode/utf8"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

// Validation of node-to-node messages, and of every write before a leader
// appends it. A node checks a message's shape before it acts on it, so that
// a malformed or forged message is refused whole, changes nothing, and gets
// an error matching kvstore.ErrBadRequest that names the problem. The rules
// are what a real leader's messages always satisfy (docs/design.md, Validation):
//
//   - epochs start at 1;
//   - an Append carries entries or a snapshot, not both; its entries follow
//     prev one seq at a time, all of the leader's own epoch (a follower
//     applies an entry only in the epoch it accepted); prev is a position
//     of the leader's history, so not of a later epoch;
//   - an entry is a no-op (nothing else in it), a set, or a delete (no
//     value) of a non-empty key of at most maxKeyLen bytes, with a request
//     id of at most maxReqIDLen bytes;
//   - a snapshot is a state some history produces (store.Snapshot.Check),
//     at a position of an epoch no later than the sender's, with every key
//     listed once.
//
// What depends on the node's state is not checked here but by the
// handlers, with the protocol's answers: a stale epoch (Ok false and the
// epoch promised), entries that do not follow the node's position (Ok false
// and the position, so that the leader backfills), a snapshot behind the
// node's position (ignored if of the same epoch: a late copy; refused
// otherwise). A valid message that repeats what the node already applied is
// therefore answered as before, never refused.
//
// Keys and values are also checked for valid UTF-8 before a write leaves
// its node: protobuf strings must be, and an entry that cannot be encoded
// would stop the leader's replication for good.

// maxKeyLen is the longest key any node stores: the durable store's limit,
// the same on every node (Config.MaxKeySize, the client API's limit, is
// per node and should not exceed it).
const maxKeyLen = durable.MaxKeyLen

// maxReqIDLen is the longest request id a write may carry: client ids are
// at most MaxRequestID bytes with a two-byte prefix, node-made ids the
// node's id, an incarnation and a counter.
const maxReqIDLen = 1024

func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{kvstore.ErrBadRequest}, args...)...)
}

func checkEpoch(what string, epoch int64) error {
	if epoch < 1 {
		return badRequest("%s of epoch %d: epochs start at 1", what, epoch)
	}
	return nil
}

// keyLimit is how long a key may be where it is checked, and what a longer
// one is.
type keyLimit struct {
	max  int    // the longest key, in bytes
	name string // how messages name the limit ("at most", "MaxKeySize")
	err  error  // what a longer key is: kvstore.ErrBadRequest or ErrTooLarge
}

// storedKeys is the limit of every node: maxKeyLen, the durable store's.
var storedKeys = keyLimit{max: maxKeyLen, name: "at most", err: kvstore.ErrBadRequest}

// checkKey is the node's one key validator: what (a "key", a "node id")
// must be non-empty, at most lim.max bytes long, and valid UTF-8 (protobuf
// strings must be). Every key a node takes passes it: the client API's
// reads and writes with the node's own limit (limiter.clientKeys), and every
// message from another node (validateWrite, validateFetch,
// validateSnapshot) with storedKeys.
func checkKey(what, key string, lim keyLimit) error {
	switch {
	case key == "":
		return badRequest("empty %s", what)
	case len(key) > lim.max:
		return fmt.Errorf("%w: %s of %d bytes (%s %d)", lim.err, what, len(key), lim.name, lim.max)
	case !utf8.ValidString(key):
		return badRequest("%s %q is not valid UTF-8", what, key)
	}
	return nil
}

func checkReqID(id string) error {
	switch {
	case len(id) > maxReqIDLen:
		return badRequest("request id of %d bytes (at most %d)", len(id), maxReqIDLen)
	case !utf8.ValidString(id):
		return badRequest("request id %q is not valid UTF-8", id)
	}
	return nil
}

// validateWrite checks a set or delete before a leader appends it: what
// passes makes an entry every follower accepts.
func validateWrite(op kvpb.Op, key, value, reqID string) error {
	switch op {
	case kvpb.Op_OP_SET:
		if !utf8.ValidString(value) {
			return badRequest("value of %q is not valid UTF-8", key)
		}
	case kvpb.Op_OP_DELETE:
		if value != "" {
			return badRequest("delete of %q carries a value", key)
		}
	default:
		return badRequest("write of %q with op %v: want a set or a delete", key, op)
	}
	if err := checkKey("key", key, storedKeys); err != nil {
		return err
	}
	return checkReqID(reqID)
}

// validateFetch checks a read forwarded to the leader.
func validateFetch(req *kvpb.FetchRequest) error {
	if err := checkKey("key", req.Key, storedKeys); err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	return nil
}

// maxRenewKeys is the most keys one Renew may name: a renewal of the
// longest keys stays far below the message limit.
const maxRenewKeys = 1024

// validateRenew checks a renewal of cached copies sent to the leader.
func validateRenew(req *kvpb.RenewRequest) error {
	if len(req.Keys) > maxRenewKeys {
		return badRequest("renew of %d keys: at most %d", len(req.Keys), maxRenewKeys)
	}
	for _, k := range req.Keys {
		if err := checkKey("key", k.Key, storedKeys); err != nil {
			return fmt.Errorf("renew: %w", err)
		}
	}
	return nil
}

// checkPosition checks a position that names a replicated state: 0.0 (the
// empty state) or an epoch in [1, epoch] with a seq of at least 1.
func checkPosition(what string, p store.Version, epoch int64) error {
	if bad := positionProblem(p, epoch); bad != "" {
		return badRequest("%s %s", what, bad)
	}
	return nil
}

// positionProblem is what is wrong with p as checkPosition sees it ("" if
// nothing). Loops over many items call it and describe where only on a
// failure, so that a valid message costs no formatting.
func positionProblem(p store.Version, epoch int64) string {
	switch {
	case p == store.Version{}:
	case p.Seq == 0 || p.Epoch < 1:
		return fmt.Sprintf("%s is no position (epochs and seqs start at 1)", p)
	case p.Epoch > epoch:
		return fmt.Sprintf("%s is of an epoch after the sender's %d", p, epoch)
	}
	return ""
}

// validateAppend checks an Append's shape (see the rules above).
func validateAppend(req *kvpb.AppendRequest) error {
	if err := checkEpoch("append", req.Epoch); err != nil {
		return err
	}
	if req.Snapshot != nil {
		if len(req.Entries) > 0 {
			return badRequest("append (epoch %d) carries a snapshot and %d entries", req.Epoch, len(req.Entries))
		}
		return validateSnapshot(req.Snapshot, req.Epoch)
	}
	prev := fromPos(req.Prev)
	if bad := positionProblem(prev, req.Epoch); bad != "" {
		return badRequest("append (epoch %d): prev %s", req.Epoch, bad)
	}
	last := prev
	for i, pe := range req.Entries {
		e := fromEntry(pe)
		where := func() string {
			return fmt.Sprintf("append (epoch %d): entry %d of %d at %s", req.Epoch, i+1, len(req.Entries), e.Version)
		}
		switch {
		case e.Version.Epoch != req.Epoch:
			return badRequest("%s is not of the leader's epoch %d", where(), req.Epoch)
		case e.Version.Seq != last.Seq+1 || e.Version.Seq == 0:
			return badRequest("%s does not follow %s (entries must be contiguous, in seq order)", where(), last)
		}
		switch pe.Op {
		case kvpb.Op_OP_NOOP:
			if pe.Key != "" || pe.Value != "" || pe.ReqId != "" {
				return badRequest("%s is a no-op with a key, value or request id", where())
			}
		case kvpb.Op_OP_SET, kvpb.Op_OP_DELETE:
			if err := validateWrite(pe.Op, pe.Key, pe.Value, pe.ReqId); err != nil {
				return fmt.Errorf("%s: %w", where(), err)
			}
		default:
			return badRequest("%s has unknown op %d", where(), pe.Op)
		}
		last = e.Version
	}
	return nil
}

// validateChunk checks a snapshot chunk's shape: a position as a
// snapshot's, items in ascending key order after the chunk's key, valid
// request ids, and a count only with the last chunk. What only the whole
// shows (store.View.Check) is checked when the last chunk arrives.
func validateChunk(req *kvpb.SnapshotChunk) error {
	if err := checkEpoch("snapshot chunk", req.Epoch); err != nil {
		return err
	}
	applied := fromPos(req.Applied)
	where := fmt.Sprintf("snapshot chunk at %s (epoch %d) after %q", applied, req.Epoch, req.After)
	if err := checkPosition(where+": applied position", applied, req.Epoch); err != nil {
		return err
	}
	if !req.Last && req.Count != 0 {
		return badRequest("%s: a count (%d) in a chunk that is not the last", where, req.Count)
	}
	prev := req.After
	for _, it := range req.Items {
		if err := checkKey("key", it.Key, storedKeys); err != nil {
			return fmt.Errorf("%s: item: %w", where, err)
		}
		if it.Key <= prev {
			return badRequest("%s: key %q does not follow %q (keys ascend, each listed once)", where, it.Key, prev)
		}
		prev = it.Key
		if bad := positionProblem(fromPos(it.Version), req.Epoch); bad != "" {
			return badRequest("%s: item %q: version %s", where, it.Key, bad)
		}
	}
	if len(req.Items) > 0 && req.RequestsFrom > 0 {
		return badRequest("%s: items after request ids (items come first)", where)
	}
	return checkRequests(where, req.Requests, req.Epoch)
}

// checkRequests checks the remembered request ids of a snapshot.
func checkRequests(where string, reqs []*kvpb.Request, epoch int64) error {
	for _, r := range reqs {
		if err := checkReqID(r.Id); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if bad := positionProblem(fromPos(r.Version), epoch); bad != "" {
			return badRequest("%s: request %q: version %s", where, r.Id, bad)
		}
	}
	return nil
}

// validateSnapshot checks a snapshot sent by the leader of epoch.
func validateSnapshot(p *kvpb.Snapshot, epoch int64) error {
	applied := fromPos(p.Applied)
	where := fmt.Sprintf("snapshot at %s (epoch %d)", applied, epoch)
	if err := checkPosition(where+": applied position", applied, epoch); err != nil {
		return err
	}
	keys := make(map[string]bool, len(p.Items))
	for _, it := range p.Items {
		if err := checkKey("key", it.Key, storedKeys); err != nil {
			return fmt.Errorf("%s: item: %w", where, err)
		}
		if keys[it.Key] {
			return badRequest("%s: key %q is listed twice", where, it.Key)
		}
		keys[it.Key] = true
		if bad := positionProblem(fromPos(it.Version), epoch); bad != "" {
			return badRequest("%s: item %q: version %s", where, it.Key, bad)
		}
	}
	if err := checkRequests(where, p.Requests, epoch); err != nil {
		return err
	}
	if err := fromSnapshot(p).Check(); err != nil {
		return badRequest("%s: %w", where, err)
	}
	return nil
}
