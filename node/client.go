package node

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	"google.golang.org/grpc"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// MaxRequestID is the longest request id a client may attach to a write.
const MaxRequestID = 128

// SetWithID sets key like Set, named by the caller's request id: a retry
// with the same id (through any node) is applied once. An empty id behaves
// like Set.
func (n *Node) SetWithID(ctx context.Context, reqID, key, value string) error {
	return n.writeWithID(ctx, kvpb.Op_OP_SET, reqID, key, value)
}

// DeleteWithID removes key like Delete, named by the caller's request id.
func (n *Node) DeleteWithID(ctx context.Context, reqID, key string) error {
	return n.writeWithID(ctx, kvpb.Op_OP_DELETE, reqID, key, "")
}

// writeWithID is every client write's entry point: Set, Delete and their
// WithID forms. It records the operation in the node's metrics.
func (n *Node) writeWithID(ctx context.Context, op kvpb.Op, reqID, key, value string) error {
	start := n.now()
	err := n.doWriteWithID(ctx, op, reqID, key, value)
	n.met.observe(writeKind(op), start, err)
	return err
}

func (n *Node) doWriteWithID(ctx context.Context, op kvpb.Op, reqID, key, value string) error {
	if reqID == "" {
		return n.write(ctx, op, key, value)
	}
	if len(reqID) > MaxRequestID {
		return fmt.Errorf("%w: request id of %d bytes (at most %d)", kvstore.ErrBadRequest, len(reqID), MaxRequestID)
	}
	// Client ids live in their own namespace: node-made ids never start
	// with "c.".
	return n.writeAs(ctx, op, key, value, "c."+reqID)
}

// Members returns the live members this node sees: id -> RPC address.
func (n *Node) Members() map[string]string {
	return maps.Clone(n.view.Load().members)
}

// clientServer is the public client service (kvpb.KV) on the node's gRPC
// server. Errors become gRPC statuses in the node's interceptor.
type clientServer struct {
	kvpb.UnimplementedKVServer
	n *Node
}

func (s *clientServer) Get(ctx context.Context, req *kvpb.GetRequest) (*kvpb.GetResponse, error) {
	v, found, err := s.n.Get(ctx, req.Key)
	if err != nil {
		return nil, err
	}
	return &kvpb.GetResponse{Value: v, Found: found}, nil
}

func (s *clientServer) Put(ctx context.Context, req *kvpb.PutRequest) (*kvpb.PutResponse, error) {
	if err := s.n.SetWithID(ctx, req.RequestId, req.Key, req.Value); err != nil {
		return nil, err
	}
	return &kvpb.PutResponse{}, nil
}

func (s *clientServer) Delete(ctx context.Context, req *kvpb.DeleteRequest) (*kvpb.DeleteResponse, error) {
	if err := s.n.DeleteWithID(ctx, req.RequestId, req.Key); err != nil {
		return nil, err
	}
	return &kvpb.DeleteResponse{}, nil
}

func (s *clientServer) Status(ctx context.Context, _ *kvpb.StatusRequest) (*kvpb.StatusResponse, error) {
	n := s.n
	l := n.Leader()
	resp := &kvpb.StatusResponse{
		Id:       n.cfg.ID,
		Cluster:  n.cfg.Cluster,
		State:    string(n.State()),
		IsLeader: n.IsLeader(),
		LeaderId: l.ID,
		Epoch:    l.Epoch,
	}
	if n.Recovering() {
		resp.State += ",recovering"
	}
	for id, addr := range n.Members() {
		resp.Members = append(resp.Members, &kvpb.Member{Id: id, Addr: addr})
	}
	// The voter record lives in the coordinator; a node cut off from it
	// still answers, without voters.
	vctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if v, err := n.cfg.Coordinator.Voters(vctx); err == nil {
		resp.Voters = v.IDs
	}
	if st, err := n.cfg.Coordinator.Settings(vctx); err == nil && st.Version != 0 {
		resp.Settings = &kvpb.Settings{
			LeaseMs: st.LeaseDuration.Milliseconds(), ClockDrift: st.ClockDrift,
			MaxRequests: int64(st.MaxRequests), MaxLeaseMs: st.MaxLease.Milliseconds(),
		}
	}
	return resp, nil
}

// peerMethod reports whether an RPC belongs to the node-to-node service,
// which rmi-down switches off; the client service stays up.
func peerMethod(info *grpc.UnaryServerInfo) bool { return isPeerMethod(info.FullMethod) }

// isPeerMethod reports whether the full method name (/service/method)
// belongs to the node-to-node service.
func isPeerMethod(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/"+kvpb.Peer_ServiceDesc.ServiceName+"/")
}
