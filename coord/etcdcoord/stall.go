package etcdcoord

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// A member that stops answering (paused, frozen) keeps its connection
// ready, so gRPC's round robin, which the etcd client uses, keeps sending
// it every third call, and a caller that calls periodically can land on it
// every time (seen: a node's keep-alives, and a new leader's reads, timing
// out again and again while the two other members answered). So the
// client's calls are balanced by skipStalledPolicy instead: round robin
// over the ready members that are not marked stalled. A member is marked
// when a call to it that ran at least stallAfter ends at its deadline with
// nothing received, and when a watch on it stops making progress; it is
// unmarked when a call to it is answered, or when it answers a probe (a
// linearizable read pinned to it, every stallProbeEvery while it is
// marked). If every ready member is marked, calls go round robin over all
// of them.

// skipStalledPolicy is the name of the load-balancing policy.
const skipStalledPolicy = "kvstore_skip_stalled"

const (
	// stallProbeEvery is how often a marked member is probed.
	stallProbeEvery = 250 * time.Millisecond
	// stallProbeTimeout bounds one probe: an attempt's time, so that a
	// member slow but within it is not kept out.
	stallProbeTimeout = attemptTimeout
	// stallAfter is how long a call that ends at its deadline must have
	// run for its member to be marked: a call whose caller gave it less
	// time proves nothing of the member.
	stallAfter = attemptTimeout / 2
)

func init() {
	balancer.Register(builder{base.NewBalancerBuilder(skipStalledPolicy, pickerBuilder{}, base.Config{HealthCheck: false})})
}

// builder builds gRPC's base balancer, which connects to every address the
// resolver gives and asks pickerBuilder for a picker over the ready ones.
// The etcd client's resolver gives endpoints, not the addresses the base
// balancer reads: addressesOfEndpoints passes them on as addresses.
type builder struct{ balancer.Builder }

func (b builder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	return addressesOfEndpoints{b.Builder.Build(cc, opts)}
}

type addressesOfEndpoints struct{ balancer.Balancer }

func (a addressesOfEndpoints) UpdateClientConnState(s balancer.ClientConnState) error {
	if len(s.ResolverState.Addresses) == 0 {
		for _, e := range s.ResolverState.Endpoints {
			s.ResolverState.Addresses = append(s.ResolverState.Addresses, e.Addresses...)
		}
	}
	return a.Balancer.UpdateClientConnState(s)
}

// stalls is one client's set of members (by address) marked stalled.
type stalls struct {
	log    *slog.Logger
	mu     sync.Mutex
	marked map[string]bool
	wake   chan struct{} // closed and replaced when a member is marked
}

func newStalls(log *slog.Logger) *stalls {
	return &stalls{log: log, marked: make(map[string]bool), wake: make(chan struct{})}
}

// mark marks addr stalled.
func (s *stalls) mark(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.marked[addr] {
		s.marked[addr] = true
		close(s.wake)
		s.wake = make(chan struct{})
		s.log.Warn("etcd member stopped answering: calls skip it until it answers", "member", addr)
	}
}

// unmark unmarks addr.
func (s *stalls) unmark(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.marked[addr] {
		delete(s.marked, addr)
		s.log.Info("etcd member answers again", "member", addr)
	}
}

// stalled reports whether addr is marked.
func (s *stalls) stalled(addr string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.marked[addr]
}

// list returns the marked members, sorted, and a channel closed when
// another is marked.
func (s *stalls) list() ([]string, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.marked))
	for a := range s.marked {
		out = append(out, a)
	}
	slices.Sort(out)
	return out, s.wake
}

// done records how a call to addr, picked at picked, ended: answered, it
// unmarks the member; at its deadline with nothing received after at
// least stallAfter, it marks it. (gRPC reports a pick whose connection
// was no longer ready as done with no error and nothing received.)
func (s *stalls) done(addr string, picked time.Time, di balancer.DoneInfo) {
	switch {
	case di.Err == nil && di.BytesReceived:
		s.unmark(addr)
	case di.Err != nil && !di.BytesReceived && deadlineErr(di.Err) && time.Since(picked) >= stallAfter:
		s.mark(addr)
	}
}

// deadlineErr reports whether err is a call's deadline passing.
func deadlineErr(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || status.Code(err) == codes.DeadlineExceeded
}

// stallsKey carries a call's *stalls in its context (callContext);
// pinKey an address the call must go to (a probe); pickNoteKey a
// *pickNote.
type (
	stallsKey   struct{}
	pinKey      struct{}
	pickNoteKey struct{}
)

// pickNote records the member a stream was last opened on. A watch's
// stream ends canceled, not at a deadline, when the watch finds it stuck,
// so the watch marks the member itself (markStalled).
type pickNote struct{ addr atomic.Pointer[string] }

// withPickNote returns ctx carrying a new pickNote, and the note. The
// etcd client opens a watch's stream with a context that keeps the
// values of the watch's.
func withPickNote(ctx context.Context) (context.Context, *pickNote) {
	n := &pickNote{}
	return context.WithValue(ctx, pickNoteKey{}, n), n
}

// markStalled marks the member n's stream was last opened on, if any.
func (c *Coordinator) markStalled(n *pickNote) {
	if a := n.addr.Load(); a != nil {
		c.stalls.mark(*a)
	}
}

// dialOptions are the options that make the client's calls use the
// policy with s. The resolver's service config (round robin) is ignored.
func (s *stalls) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDisableServiceConfig(),
		grpc.WithDefaultServiceConfig(`{"loadBalancingPolicy":"` + skipStalledPolicy + `"}`),
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(context.WithValue(ctx, stallsKey{}, s), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(context.WithValue(ctx, stallsKey{}, s), desc, cc, method, opts...)
		}),
	}
}

type pickerBuilder struct{}

// readySC is a ready SubConn and the member address it connects to.
type readySC struct {
	sc   balancer.SubConn
	addr string
}

func (pickerBuilder) Build(info base.PickerBuildInfo) balancer.Picker {
	if len(info.ReadySCs) == 0 {
		return base.NewErrPicker(balancer.ErrNoSubConnAvailable)
	}
	p := &picker{}
	for sc, i := range info.ReadySCs {
		p.scs = append(p.scs, readySC{sc: sc, addr: i.Address.Addr})
	}
	slices.SortFunc(p.scs, func(a, b readySC) int { return cmp.Compare(a.addr, b.addr) })
	p.next.Store(rand.Uint32()) // clients do not all start on the same member
	return p
}

// picker picks round robin over the ready members not marked stalled in
// the call's stalls, or over all of them if all are marked; a call with a
// pinned address goes there or fails Unavailable.
type picker struct {
	scs  []readySC
	next atomic.Uint32
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	s, _ := info.Ctx.Value(stallsKey{}).(*stalls)
	if pin, ok := info.Ctx.Value(pinKey{}).(string); ok {
		// A probe: probeStalled judges its answer.
		for _, r := range p.scs {
			if r.addr == pin {
				return balancer.PickResult{SubConn: r.sc}, nil
			}
		}
		return balancer.PickResult{}, status.Errorf(codes.Unavailable, "etcdcoord: no ready connection to %s", pin)
	}
	// Round robin over the members not marked, each taking an equal
	// share; over all of them if all are marked.
	start := p.next.Add(1)
	r := p.scs[start%uint32(len(p.scs))]
	if s != nil {
		var live [8]readySC
		ok := live[:0]
		for _, c := range p.scs {
			if !s.stalled(c.addr) {
				ok = append(ok, c)
			}
		}
		if len(ok) > 0 {
			r = ok[start%uint32(len(ok))]
		}
	}
	if note, ok := info.Ctx.Value(pickNoteKey{}).(*pickNote); ok {
		note.addr.Store(&r.addr)
	}
	return p.result(r, s), nil
}

func (p *picker) result(r readySC, s *stalls) balancer.PickResult {
	res := balancer.PickResult{SubConn: r.sc}
	if s != nil {
		picked := time.Now()
		res.Done = func(di balancer.DoneInfo) { s.done(r.addr, picked, di) }
	}
	return res
}

// probeStalled probes the members marked stalled every stallProbeEvery,
// and at once when another is marked, until the client closes. A member
// is unmarked once it answers a linearizable read (of c.keys.probe, which
// is never written), as etcd's own /health does: the read needs the
// member to reach the leader and to have applied up to the leader's
// commit, which the node's calls need too. A Status call, answered by
// the member alone, would unmark a member whose reads hang (its apply
// stuck, or cut from the leader before it notices), and every call sent
// there would wait out its attempt again.
func (c *Coordinator) probeStalled() {
	kv := pb.NewKVClient(c.client.ActiveConnection())
	probe := &pb.RangeRequest{Key: []byte(c.keys.probe), Limit: 1, CountOnly: true}
	for {
		marked, wake := c.stalls.list()
		if len(marked) > 0 {
			var wg sync.WaitGroup
			for _, addr := range marked {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.WithValue(c.client.Ctx(), pinKey{}, addr), stallProbeTimeout)
					defer cancel()
					if _, err := kv.Range(ctx, probe); err == nil {
						c.stalls.unmark(addr)
					}
				})
			}
			wg.Wait()
		}
		var next <-chan time.Time
		var t *time.Timer
		if len(marked) > 0 {
			t = time.NewTimer(stallProbeEvery)
			next = t.C
		}
		select {
		case <-c.client.Ctx().Done():
		case <-wake:
		case <-next:
		}
		if t != nil {
			t.Stop()
		}
		if c.client.Ctx().Err() != nil {
			return
		}
	}
}
