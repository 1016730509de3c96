package node

// The public client service (kvpb.KV) on the node's gRPC server: thin
// handlers over the Node's methods (read.go, write.go, members.go), and
// Status with the coordinator's records.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/coord"
	"github.com/kvstore/kvstore/internal/buildinfo"
	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

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
	return &kvpb.PutResponse{LeaderAddr: s.n.leaderAddr()}, nil
}

func (s *clientServer) Delete(ctx context.Context, req *kvpb.DeleteRequest) (*kvpb.DeleteResponse, error) {
	if err := s.n.DeleteWithID(ctx, req.RequestId, req.Key); err != nil {
		return nil, err
	}
	return &kvpb.DeleteResponse{LeaderAddr: s.n.leaderAddr()}, nil
}

// Batch runs a batch's operations concurrently, each through the handler
// it would have had alone, and answers each in order with its response or
// the status it would have failed with. A read this node answers from its
// cache is answered at once, in the handler's goroutine: it cannot block,
// and a goroutine of its own (started small, its stack grown on the way
// down the read path) cost more than the read. The rest run concurrently.
func (s *clientServer) Batch(ctx context.Context, req *kvpb.BatchRequest) (*kvpb.BatchResponse, error) {
	results := make([]*kvpb.BatchResult, len(req.Ops))
	rest := make([]int, 0, len(req.Ops))
	for i, op := range req.Ops {
		if r := s.cachedOp(op); r != nil {
			results[i] = r
			continue
		}
		rest = append(rest, i)
	}
	one := func(i int) {
		results[i] = s.batchOp(ctx, req.Ops[i])
	}
	var wg sync.WaitGroup
	for _, i := range rest[min(1, len(rest)):] {
		wg.Add(1)
		s.n.workers.do(func() {
			defer wg.Done()
			one(i)
		})
	}
	if len(rest) > 0 {
		one(rest[0])
	}
	wg.Wait()
	return &kvpb.BatchResponse{Results: results}, nil
}

// cachedOp answers op if it is a read this node answers from its cache
// (as Get would, counted the same); nil otherwise.
func (s *clientServer) cachedOp(op *kvpb.BatchOp) *kvpb.BatchResult {
	g, ok := op.GetOp().(*kvpb.BatchOp_Get)
	if !ok || g.Get == nil {
		return nil
	}
	v, found, ok := s.n.reader.readCached(g.Get.Key)
	if !ok {
		return nil
	}
	return &kvpb.BatchResult{Get: &kvpb.GetResponse{Value: v, Found: found}}
}

// batchOp runs one operation of a batch.
func (s *clientServer) batchOp(ctx context.Context, op *kvpb.BatchOp) *kvpb.BatchResult {
	var r kvpb.BatchResult
	var err error
	switch o := op.GetOp().(type) {
	case *kvpb.BatchOp_Get:
		r.Get, err = s.Get(ctx, o.Get)
	case *kvpb.BatchOp_Put:
		r.Put, err = s.Put(ctx, o.Put)
	case *kvpb.BatchOp_Delete:
		r.Delete, err = s.Delete(ctx, o.Delete)
	default:
		err = fmt.Errorf("%w: a batch operation with no Get, Put or Delete", kvstore.ErrBadRequest)
	}
	if err != nil {
		r = kvpb.BatchResult{Error: rpc.MarshalStatus(err)}
	}
	return &r
}

// leaderAddr is the advertised address of the leader this node follows
// (or its own, if it leads), "" if it knows none: a hint for clients,
// which send their writes there.
func (n *Node) leaderAddr() string {
	v := n.view.Load()
	return v.members[v.leader.ID]
}

func (s *clientServer) Status(ctx context.Context, _ *kvpb.StatusRequest) (*kvpb.StatusResponse, error) {
	n := s.n
	l := n.Leader()
	bi := buildinfo.Get()
	resp := &kvpb.StatusResponse{
		Id:       n.cfg.ID,
		Cluster:  n.cfg.Cluster,
		State:    string(n.State()),
		IsLeader: n.IsLeader(),
		LeaderId: l.ID,
		Epoch:    l.Epoch,
		Build:    &kvpb.Build{Version: bi.Version, Commit: bi.Commit, GoVersion: bi.GoVersion},
		Storage:  &kvpb.Storage{DataDir: n.cfg.DataDir != "", Fsync: n.cfg.DataDir != "" && !n.cfg.NoFsync},
	}
	stats := n.Stats()
	resp.Cache = &kvpb.Cache{Hits: stats.CacheHits, Misses: stats.CacheMisses}
	if n.Recovering() {
		resp.State += ",recovering"
	}
	for id, addr := range n.Members() {
		resp.Members = append(resp.Members, &kvpb.Member{Id: id, Addr: addr})
	}
	// The voter and settings records live in the coordinator: a node cut
	// off from it answers with the copies it read last (none if it never
	// read them).
	voters, st := s.coordRecords(ctx)
	if voters != nil {
		resp.Voters = voters.IDs
	}
	if st != nil {
		resp.Settings = &kvpb.Settings{
			LeaseMs: st.LeaseDuration.Milliseconds(), ClockDrift: st.ClockDrift,
			MaxRequests: int64(st.MaxRequests), MaxLeaseMs: st.MaxLease.Milliseconds(),
		}
	}
	return resp, nil
}

// statusReadBudget bounds Status's reads of the coordinator once the node
// holds copies of the records to fall back on.
const statusReadBudget = 250 * time.Millisecond

// records are the copies of the coordinator's voter and settings records
// this node read last, for Status.
type records struct {
	mu       sync.Mutex
	voters   *coord.Voters
	settings *coord.Settings
}

// noteVoters keeps v as the voter record last read.
func (r *records) noteVoters(v coord.Voters) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.voters = &v
}

// noteSettings keeps st (if recorded at all) as the settings record last
// read.
func (r *records) noteSettings(st coord.Settings) {
	if st.Version == 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.settings = &st
}

// last returns the copies read last (nil: never read).
func (r *records) last() (*coord.Voters, *coord.Settings) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.voters, r.settings
}

// coordRecords returns the voter and settings records for Status within
// ctx's deadline: read from the coordinator while the node serves, and
// otherwise, or when the reads take longer than half the time left (or
// than statusReadBudget, once copies exist), the copies read last. nil: never
// read.
func (s *clientServer) coordRecords(ctx context.Context) (*coord.Voters, *coord.Settings) {
	n := s.n
	v, st := n.recs.last()
	have := v != nil && st != nil
	budget := n.cfg.RPCTimeout
	if have {
		budget = min(budget, statusReadBudget)
	}
	if dl, ok := ctx.Deadline(); ok {
		budget = min(budget, time.Until(dl)/2)
	}
	// A node that does not serve cannot reach the coordinator, or not
	// for long: its copies are what it knows.
	if n.State() == StateOK && budget > 0 {
		rctx, cancel := context.WithTimeout(ctx, budget)
		if v, err := n.cfg.Coordinator.Voters(rctx); err == nil {
			n.recs.noteVoters(v)
		}
		if st, err := n.cfg.Coordinator.Settings(rctx); err == nil {
			n.recs.noteSettings(st)
		}
		cancel()
	}
	return n.recs.last()
}

// peerMethod reports whether an RPC belongs to the node-to-node service,
// which rmi-down switches off; the client service stays up.
func peerMethod(info *grpc.UnaryServerInfo) bool { return isPeerMethod(info.FullMethod) }

// isPeerMethod reports whether the full method name (/service/method)
// belongs to the node-to-node service.
func isPeerMethod(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/"+kvpb.Peer_ServiceDesc.ServiceName+"/")
}

// RemoveMember is the client API's voter removal.
func (s *clientServer) RemoveMember(ctx context.Context, req *kvpb.RemoveMemberRequest) (*kvpb.RemoveMemberResponse, error) {
	voters, err := s.n.RemoveVoter(ctx, req.Id)
	if err != nil {
		return nil, err
	}
	return &kvpb.RemoveMemberResponse{Voters: voters}, nil
}
