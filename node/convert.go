package node

// Conversion between the wire messages (kvpb) and the store's types.

import (
	"github.com/kvstore/kvstore/rpc/kvpb"
	"github.com/kvstore/kvstore/store"
)

// storeOp is the store operation of a wire op (a no-op for unknown ones).
func storeOp(op kvpb.Op) store.Op {
	switch op {
	case kvpb.Op_OP_SET:
		return store.OpSet
	case kvpb.Op_OP_DELETE:
		return store.OpDelete
	}
	return store.OpNoop
}

// pbOp is the wire op of a store operation.
func pbOp(op store.Op) kvpb.Op {
	switch op {
	case store.OpSet:
		return kvpb.Op_OP_SET
	case store.OpDelete:
		return kvpb.Op_OP_DELETE
	}
	return kvpb.Op_OP_NOOP
}

func toPos(v store.Version) *kvpb.Position { return &kvpb.Position{Epoch: v.Epoch, Seq: v.Seq} }

func fromPos(p *kvpb.Position) store.Version {
	return store.Version{Epoch: p.GetEpoch(), Seq: p.GetSeq()}
}

func toEntry(e store.Entry) *kvpb.Entry {
	return fillEntry(new(kvpb.Entry), &e)
}

// fillEntry fills p, a zero message, with e and returns it.
func fillEntry(p *kvpb.Entry, e *store.Entry) *kvpb.Entry {
	p.Epoch, p.Seq, p.Op, p.Key, p.Value, p.ReqId = e.Version.Epoch, e.Version.Seq, pbOp(e.Op), e.Key, e.Value, e.ReqID
	return p
}

func fromEntry(e *kvpb.Entry) store.Entry {
	return store.Entry{Version: store.Version{Epoch: e.Epoch, Seq: e.Seq}, Op: storeOp(e.Op), Key: e.Key, Value: e.Value, ReqID: e.ReqId}
}

func fromSnapshot(p *kvpb.Snapshot) store.Snapshot {
	s := store.Snapshot{Applied: fromPos(p.Applied), Items: make(map[string]store.Item, len(p.Items)), Requests: make([]store.Request, 0, len(p.Requests))}
	for _, it := range p.Items {
		s.Items[it.Key] = store.Item{Value: it.Value, Deleted: it.Deleted, Version: fromPos(it.Version)}
	}
	for _, r := range p.Requests {
		s.Requests = append(s.Requests, store.Request{ID: r.Id, Version: fromPos(r.Version)})
	}
	return s
}
