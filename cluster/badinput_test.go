package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/client"
	"github.com/kvstore/kvstore/internal/soon"
	"github.com/kvstore/kvstore/node"
	"github.com/kvstore/kvstore/rpc/kvpb"
)

// Bad input sent straight to a node's RPC port: each message is refused
// with a clear error, and the cluster stays consistent (docs/testing.md: bad
// input).

const peerService = "/kvstore.peer.v1.Peer/"

// rawCodec sends and receives messages as the bytes given: for requests
// that are no valid protobuf. It calls itself "proto" so that the server
// decodes with its protobuf codec.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*[]byte) = slices.Clone(data)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// badCall is one row of the table: a message for one node and the answer
// it must get.
type badCall struct {
	name   string
	to     string // "leader" or "follower"
	method string // of the Peer service
	// req builds the message from the cluster's current epoch e and the
	// target's applied position; raw, if set, is sent as it is instead.
	req func(e int64, applied *kvpb.Position) proto.Message
	raw []byte
	// oversized sends a request whose length prefix claims 4 GiB.
	oversized bool
	code      codes.Code
	msg       string // the error message must contain it
	// refusedAsStale: the protocol answers with Ok false, the epoch
	// promised and the node's position, not with an error: the leader
	// learns a newer epoch from it, or where to resume sending.
	refusedAsStale bool
}

func pos(e int64, s uint64) *kvpb.Position { return &kvpb.Position{Epoch: e, Seq: s} }

// badCalls is the table. Entries are built after the target's position,
// so that only the defect named is wrong with them.
func badCalls() []badCall {
	set := func(e int64, s uint64, k string) *kvpb.Entry {
		return &kvpb.Entry{Epoch: e, Seq: s, Op: kvpb.Op_OP_SET, Key: k, Value: "bad"}
	}
	app := func(e int64, prev *kvpb.Position, es ...*kvpb.Entry) *kvpb.AppendRequest {
		return &kvpb.AppendRequest{Cluster: "default", Epoch: e, LeaderId: "intruder", Prev: prev, Entries: es}
	}
	snap := func(e int64, a *kvpb.Position, items []*kvpb.Item, reqs ...*kvpb.Request) *kvpb.AppendRequest {
		return &kvpb.AppendRequest{Cluster: "default", Epoch: e, LeaderId: "intruder", Snapshot: &kvpb.Snapshot{Applied: pos(e, a.Seq+1), Items: items, Requests: reqs}}
	}
	// Invalid UTF-8 in a WriteRequest's key (field 3): protobuf refuses it.
	badUTF8 := []byte{0x0a, 0x07}
	badUTF8 = append(badUTF8, "default"...)
	badUTF8 = append(badUTF8, 0x10, 0x01, 0x1a, 0x02, 0xff, 0xfe)
	return []badCall{
		{name: "malformed bytes to Append", to: "follower", method: "Append", raw: []byte{0xff, 0xff, 0xff, 0xff}, code: codes.Internal, msg: "unmarshal"},
		{name: "truncated varint to Prepare", to: "follower", method: "Prepare", raw: []byte{0x10, 0x80}, code: codes.Internal, msg: "unmarshal"},
		{name: "truncated snapshot to Append", to: "follower", method: "Append", raw: []byte{0x32, 0x10, 0x0a, 0x04}, code: codes.Internal, msg: "unmarshal"},
		{name: "invalid UTF-8 key to Write", to: "leader", method: "Write", raw: badUTF8, code: codes.Internal, msg: "invalid UTF-8"},
		{name: "oversized Append", to: "follower", method: "Append", oversized: true, code: codes.ResourceExhausted, msg: "larger than max"},
		{name: "oversized Write", to: "leader", method: "Write", oversized: true, code: codes.ResourceExhausted, msg: "larger than max"},
		{name: "entries out of order", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			return app(e, a, set(e, a.Seq+2, "x"), set(e, a.Seq+1, "y"))
		}, code: codes.InvalidArgument, msg: "does not follow"},
		{name: "entries with a gap", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			return app(e, a, set(e, a.Seq+1, "x"), set(e, a.Seq+3, "y"))
		}, code: codes.InvalidArgument, msg: "entry 2 of 2 at " + "{e}.{s+3} does not follow {e}.{s+1}"},
		{name: "duplicate seqs", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			return app(e, a, set(e, a.Seq+1, "x"), set(e, a.Seq+1, "y"))
		}, code: codes.InvalidArgument, msg: "does not follow"},
		{name: "entry epoch above the request's", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			return app(e, a, set(e+1, a.Seq+1, "x"))
		}, code: codes.InvalidArgument, msg: "is not of the leader's epoch"},
		{name: "prev of a later epoch", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			return app(e, pos(e+1, a.Seq))
		}, code: codes.InvalidArgument, msg: "of an epoch after the sender's"},
		{name: "unknown op", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			return app(e, a, &kvpb.Entry{Epoch: e, Seq: a.Seq + 1, Op: 7, Key: "x"})
		}, code: codes.InvalidArgument, msg: "unknown op 7"},
		{name: "empty key", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			return app(e, a, set(e, a.Seq+1, ""))
		}, code: codes.InvalidArgument, msg: "empty key"},
		{name: "key too long", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			return app(e, a, set(e, a.Seq+1, strings.Repeat("k", 32769)))
		}, code: codes.InvalidArgument, msg: "key of 32769 bytes"},
		{name: "no-op with a request id", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			return app(e, a, &kvpb.Entry{Epoch: e, Seq: a.Seq + 1, ReqId: "c.steal"})
		}, code: codes.InvalidArgument, msg: "no-op with a key, value or request id"},
		{name: "epoch 0", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			return app(0, a)
		}, code: codes.InvalidArgument, msg: "epochs start at 1"},
		{name: "entries and a snapshot", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			r := snap(e, a, nil)
			r.Entries = []*kvpb.Entry{set(e, a.Seq+1, "x")}
			return r
		}, code: codes.InvalidArgument, msg: "carries a snapshot and 1 entries"},
		{name: "snapshot with a key twice", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			return snap(e, a, []*kvpb.Item{{Key: "d", Value: "1", Version: pos(e, 1)}, {Key: "d", Value: "2", Version: pos(e, 2)}})
		}, code: codes.InvalidArgument, msg: `key "d" is listed twice`},
		{name: "snapshot item above its applied position", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			return snap(e, a, []*kvpb.Item{{Key: "f", Value: "1", Version: pos(e, a.Seq+9)}})
		}, code: codes.InvalidArgument, msg: "beyond the applied position"},
		{name: "snapshot with a request id twice", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			return snap(e, a, nil, &kvpb.Request{Id: "r", Version: pos(e, 1)}, &kvpb.Request{Id: "r", Version: pos(e, 2)})
		}, code: codes.InvalidArgument, msg: `request id "r" is listed twice`},
		{name: "snapshot of a later epoch", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			r := snap(e, a, nil)
			r.Snapshot.Applied = pos(e+1, a.Seq+1)
			return r
		}, code: codes.InvalidArgument, msg: "of an epoch after the sender's"},
		{name: "Prepare with a stale epoch", to: "follower", method: "Prepare", req: func(e int64, a *kvpb.Position) proto.Message {
			return &kvpb.PrepareRequest{Cluster: "default", Epoch: e - 1, LeaderId: "intruder"}
		}, refusedAsStale: true},
		{name: "Append with a stale epoch", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			return app(e-1, pos(e-1, a.Seq), set(e-1, a.Seq+1, "x"))
		}, refusedAsStale: true},
		{name: "entries already applied (a retry)", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			return app(e, pos(e, a.Seq-1), set(e, a.Seq, "k4"))
		}, refusedAsStale: true},
		{name: "GetSnapshot with a stale epoch", to: "follower", method: "GetSnapshot", req: func(e int64, a *kvpb.Position) proto.Message {
			return &kvpb.GetSnapshotRequest{Cluster: "default", Epoch: e - 1}
		}, code: codes.FailedPrecondition, msg: "stale epoch"},
		{name: "message for another cluster", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			r := app(e, a, set(e, a.Seq+1, "x"))
			r.Cluster = "other"
			return r
		}, code: codes.InvalidArgument, msg: `message for cluster "other" reached cluster "default"`},
		{name: "Prepare of another incarnation", to: "leader", method: "Prepare", req: func(e int64, a *kvpb.Position) proto.Message {
			return &kvpb.PrepareRequest{Cluster: "default", Incarnation: "another", Epoch: e + 1000}
		}, code: codes.Unavailable, msg: "incarnation another reached incarnation"},
		{name: "Append of another incarnation", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			r := app(e, a, set(e, a.Seq+1, "x"))
			r.Incarnation = "another"
			return r
		}, code: codes.Unavailable, msg: "incarnation another reached incarnation"},
		{name: "Append for another node", to: "follower", method: "Append", req: func(e int64, a *kvpb.Position) proto.Message {
			r := app(e, a, set(e, a.Seq+1, "x"))
			r.To = "n9"
			return r
		}, code: codes.Unavailable, msg: `message for node "n9" reached node`},
		{name: "Prepare for another node", to: "follower", method: "Prepare", req: func(e int64, a *kvpb.Position) proto.Message {
			return &kvpb.PrepareRequest{Cluster: "default", To: "n9", Epoch: e + 1000}
		}, code: codes.Unavailable, msg: `message for node "n9" reached node`},
		{name: "Prepare for another cluster", to: "leader", method: "Prepare", req: func(e int64, a *kvpb.Position) proto.Message {
			return &kvpb.PrepareRequest{Cluster: "other", Epoch: e + 1000}
		}, code: codes.InvalidArgument, msg: `message for cluster "other"`},
		{name: "GetSnapshot for another cluster", to: "follower", method: "GetSnapshot", req: func(e int64, a *kvpb.Position) proto.Message {
			return &kvpb.GetSnapshotRequest{Cluster: "other", Epoch: e}
		}, code: codes.InvalidArgument, msg: `message for cluster "other"`},
		{name: "Fetch for another cluster", to: "leader", method: "Fetch", req: func(e int64, a *kvpb.Position) proto.Message {
			return &kvpb.FetchRequest{Cluster: "other", Key: "k0", FromId: "intruder"}
		}, code: codes.InvalidArgument, msg: `message for cluster "other"`},
		{name: "Write for another cluster", to: "leader", method: "Write", req: func(e int64, a *kvpb.Position) proto.Message {
			return &kvpb.WriteRequest{Cluster: "other", Op: kvpb.Op_OP_SET, Key: "k0", Value: "bad", ReqId: "intruder.4"}
		}, code: codes.InvalidArgument, msg: `message for cluster "other"`},
		{name: "Write over the leader's MaxValueSize", to: "leader", method: "Write", req: func(e int64, a *kvpb.Position) proto.Message {
			return &kvpb.WriteRequest{Cluster: "default", Op: kvpb.Op_OP_SET, Key: "k0", Value: strings.Repeat("v", node.DefaultMaxValueSize+1), ReqId: "intruder.5"}
		}, code: codes.InvalidArgument, msg: "MaxValueSize"},
		{name: "Fetch to a non-leader", to: "follower", method: "Fetch", req: func(e int64, a *kvpb.Position) proto.Message {
			return &kvpb.FetchRequest{Cluster: "default", Key: "k0", FromId: "intruder"}
		}, code: codes.FailedPrecondition, msg: "not the leader"},
		{name: "Write to a non-leader", to: "follower", method: "Write", req: func(e int64, a *kvpb.Position) proto.Message {
			return &kvpb.WriteRequest{Cluster: "default", Op: kvpb.Op_OP_SET, Key: "k0", Value: "bad", ReqId: "intruder.1"}
		}, code: codes.FailedPrecondition, msg: "not the leader"},
		{name: "Write with an oversized request id", to: "leader", method: "Write", req: func(e int64, a *kvpb.Position) proto.Message {
			return &kvpb.WriteRequest{Cluster: "default", Op: kvpb.Op_OP_SET, Key: "k0", Value: "bad", ReqId: strings.Repeat("r", 2000)}
		}, code: codes.InvalidArgument, msg: "request id of 2000 bytes"},
		{name: "Write with an empty key", to: "leader", method: "Write", req: func(e int64, a *kvpb.Position) proto.Message {
			return &kvpb.WriteRequest{Cluster: "default", Op: kvpb.Op_OP_SET, Value: "bad", ReqId: "intruder.2"}
		}, code: codes.InvalidArgument, msg: "empty key"},
		{name: "Write with a no-op", to: "leader", method: "Write", req: func(e int64, a *kvpb.Position) proto.Message {
			return &kvpb.WriteRequest{Cluster: "default", Op: kvpb.Op_OP_NOOP, Key: "k0", ReqId: "intruder.3"}
		}, code: codes.InvalidArgument, msg: "want a set or a delete"},
		{name: "Write of a delete with a value", to: "leader", method: "Write", req: func(e int64, a *kvpb.Position) proto.Message {
			return &kvpb.WriteRequest{Cluster: "default", Op: kvpb.Op_OP_DELETE, Key: "k0", Value: "bad", ReqId: "intruder.4"}
		}, code: codes.InvalidArgument, msg: "carries a value"},
		{name: "Fetch of an empty key", to: "leader", method: "Fetch", req: func(e int64, a *kvpb.Position) proto.Message {
			return &kvpb.FetchRequest{Cluster: "default", FromId: "intruder"}
		}, code: codes.InvalidArgument, msg: "empty key"},
	}
}

// TestBadRPCInputIsRefused sends each message of badCalls to a node of a
// 3-node cluster over real gRPC: each must be refused as the row says, and
// change nothing. Writes through the client before and after must then be
// on every node, whose stores must be identical.
func TestBadRPCInputIsRefused(t *testing.T) {
	c := newCluster(t, Etcd, 3)
	cl, addrs := clientOfAll(t, c)
	acked := map[string]string{}
	put := func(k, v string) {
		t.Helper()
		if err := cl.Put(ctxT(t, 20*time.Second), k, v); err != nil {
			t.Fatalf("put %s: %v", k, err)
		}
		acked[k] = v
	}
	for i := range 5 {
		put(fmt.Sprint("k", i), fmt.Sprint("before", i))
	}
	// Every node at the leader's position: a row checks that its message
	// moved nothing.
	if err := c.WaitHealthy(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	conns := make([]*grpc.ClientConn, len(addrs))
	for i, a := range addrs {
		cc, err := grpc.NewClient("passthrough:///"+a, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		conns[i] = cc
	}

	for _, bc := range badCalls() {
		t.Run(bc.name, func(t *testing.T) {
			ld, epoch, err := c.Leader(ctxT(t, 20*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			to := ld
			if bc.to == "follower" {
				to = (ld + 1) % c.Size()
			}
			nd, err := c.Node(to)
			if err != nil {
				t.Fatal(err)
			}
			applied := nd.Applied()
			a := pos(applied.Epoch, applied.Seq)
			ctx := ctxT(t, 10*time.Second)
			var code codes.Code
			var msg string
			var resp []byte
			switch {
			case bc.oversized:
				code, msg, err = oversizedCall(ctx, addrs[to], peerService+bc.method)
				if err != nil {
					t.Fatal(err)
				}
			default:
				in := bc.raw
				if bc.req != nil {
					if in, err = proto.Marshal(bc.req(epoch, a)); err != nil {
						t.Fatal(err)
					}
				}
				err = conns[to].Invoke(ctx, peerService+bc.method, &in, &resp, grpc.ForceCodec(rawCodec{}))
				st := status.Convert(err)
				code, msg = st.Code(), st.Message()
			}
			want := strings.NewReplacer("{e}", fmt.Sprint(epoch), "{s+1}", fmt.Sprint(a.Seq+1), "{s+3}", fmt.Sprint(a.Seq+3)).Replace(bc.msg)
			if bc.refusedAsStale {
				if code != codes.OK {
					t.Fatalf("answered %v %q, want Ok false with the epoch promised", code, msg)
				}
				var ok bool
				var promised int64
				var at *kvpb.Position
				if bc.method == "Prepare" {
					var r kvpb.PrepareResponse
					err = proto.Unmarshal(resp, &r)
					ok, promised, at = r.Ok, r.AcceptedEpoch, a
				} else {
					var r kvpb.AppendResponse
					err = proto.Unmarshal(resp, &r)
					ok, promised, at = r.Ok, r.AcceptedEpoch, r.Applied
				}
				if err != nil || ok || promised < epoch || !proto.Equal(at, a) {
					t.Fatalf("answered ok %v, promised %d at %v (%v); want refused with the promise of epoch %d at %v", ok, promised, at, err, epoch, a)
				}
				msg = fmt.Sprintf("ok false, promised %d at %v", promised, at)
			} else if code != bc.code || !strings.Contains(msg, want) {
				t.Fatalf("answered %v %q; want %v naming %q", code, msg, bc.code, want)
			}
			t.Logf("%v %q", code, msg)
			if got := nd.Applied(); got != applied {
				t.Fatalf("the message moved node %d from %s to %s", to, applied, got)
			}
		})
	}

	for i := range 5 {
		put(fmt.Sprint("k", i+3), fmt.Sprint("after", i))
	}
	checkConsistent(t, c, cl, acked)
}

// checkConsistent waits until every node has applied the same position,
// then checks that their stores are identical and hold the acknowledged
// values, and that a read through every node returns them.
func checkConsistent(t *testing.T, c *Cluster, cl *client.Client, acked map[string]string) {
	t.Helper()
	if err := c.WaitHealthy(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}
	soon.Succeeds(t, 20*time.Second, func() error {
		var first string
		for i := 0; i < c.Size(); i++ {
			nd, err := c.Node(i)
			if err != nil {
				return err
			}
			applied := nd.Applied()
			var b strings.Builder
			fmt.Fprintf(&b, "applied %s:", applied)
			for _, k := range nd.LocalKeys() {
				v, _, ver := nd.LocalItem(k)
				fmt.Fprintf(&b, " %s=%q@%s", k, v, ver)
			}
			if now := nd.Applied(); now != applied {
				return fmt.Errorf("node %d moved from %s to %s while read", i, applied, now)
			}
			if i == 0 {
				first = b.String()
			} else if b.String() != first {
				return fmt.Errorf("node %d holds %s\nnode 0 holds %s", i, b.String(), first)
			}
		}
		return nil
	})
	for i := 0; i < c.Size(); i++ {
		nd, err := c.Node(i)
		if err != nil {
			t.Fatal(err)
		}
		if keys := nd.LocalKeys(); len(keys) != len(acked) {
			t.Errorf("node %d holds keys %v, want the %d written", i, keys, len(acked))
		}
		for k, want := range acked {
			if v, found, _ := nd.LocalItem(k); !found || v != want {
				t.Errorf("node %d stores %s=%q (found %v), want %q", i, k, v, found, want)
			}
			got, found, err := c.Get(ctxT(t, 20*time.Second), i, k)
			if err != nil || !found || got != want {
				t.Errorf("get %s through node %d = %q (found %v, %v), want %q", k, i, got, found, err, want)
			}
		}
	}
	for k, want := range acked {
		got, found, err := cl.Get(ctxT(t, 20*time.Second), k)
		if err != nil || !found || got != want {
			t.Errorf("client get %s = %q (found %v, %v), want %q", k, got, found, err, want)
		}
	}
}

// oversizedCall sends a request to method over a raw HTTP/2 connection with
// a gRPC length prefix that claims 4 GiB (and a few bytes of body), and
// returns the status the server answers with. The server must refuse it
// from the prefix alone, before reading (or allocating) the message.
func oversizedCall(ctx context.Context, addr, method string) (codes.Code, string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		return 0, "", err
	}
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		return 0, "", err
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", method}, {":authority", addr}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		return 0, "", err
	}
	if err := fr.WriteData(1, false, []byte{0, 0xff, 0xff, 0xff, 0xff, 0x0a, 0x01, 'x'}); err != nil {
		return 0, "", err
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return 0, "", fmt.Errorf("no status before the connection failed: %w", err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					return 0, "", err
				}
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID != 1 {
				continue
			}
			if s := f.PseudoValue("status"); s != "" && s != "200" {
				return 0, "", fmt.Errorf("HTTP status %s", s)
			}
			var code, msg string
			for _, hf := range f.Fields {
				switch hf.Name {
				case "grpc-status":
					code = hf.Value
				case "grpc-message":
					msg, _ = url.PathUnescape(hf.Value)
				}
			}
			if code != "" {
				c, err := strconv.Atoi(code)
				return codes.Code(c), msg, err
			}
		case *http2.RSTStreamFrame:
			return 0, "", fmt.Errorf("stream reset: %v", f.ErrCode)
		case *http2.GoAwayFrame:
			return 0, "", fmt.Errorf("connection closed: %v", f.ErrCode)
		}
	}
}

// TestNewerEpochEndsLeadership sends the leader an Append from a "leader"
// of the next epoch, with a snapshot of the leader's own state a little
// ahead: a message of valid shape that no check of its own can tell from a
// real newer leader's (mutual TLS keeps such senders out). The leader must
// take it as any node does, stop leading an epoch it has promised to
// refuse, and never panic; the cluster then elects again and stays
// consistent.
func TestNewerEpochEndsLeadership(t *testing.T) {
	c := newCluster(t, Etcd, 3)
	cl, addrs := clientOfAll(t, c)
	acked := map[string]string{}
	for i := range 3 {
		k, v := fmt.Sprint("k", i), fmt.Sprint("v", i)
		if err := cl.Put(ctxT(t, 20*time.Second), k, v); err != nil {
			t.Fatal(err)
		}
		acked[k] = v
	}
	ld, epoch, err := c.Leader(ctxT(t, 20*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	nd, err := c.Node(ld)
	if err != nil {
		t.Fatal(err)
	}
	applied := nd.Applied()
	snap := &kvpb.Snapshot{Applied: pos(epoch+1, applied.Seq+1)}
	for _, k := range nd.LocalKeys() {
		v, _, ver := nd.LocalItem(k)
		snap.Items = append(snap.Items, &kvpb.Item{Key: k, Value: v, Version: pos(ver.Epoch, ver.Seq)})
	}
	cc, err := grpc.NewClient("passthrough:///"+addrs[ld], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	resp, err := kvpb.NewPeerClient(cc).Append(ctxT(t, 10*time.Second), &kvpb.AppendRequest{Cluster: "default", Epoch: epoch + 1, LeaderId: "intruder", Snapshot: snap})
	if err != nil || !resp.Ok {
		t.Fatalf("append of epoch %d to the leader of %d: %v, %v; want it taken", epoch+1, epoch, resp, err)
	}
	// Writes right after: the old leader must refuse them (or hand them on),
	// not apply them to a store another epoch has replaced.
	for i := range 3 {
		k, v := fmt.Sprint("k", i), fmt.Sprint("after", i)
		if err := cl.Put(ctxT(t, 30*time.Second), k, v); err != nil {
			t.Fatalf("put %s after the newer epoch: %v", k, err)
		}
		acked[k] = v
	}
	if l2, e2, err := c.Leader(ctxT(t, 20*time.Second)); err != nil || e2 <= epoch {
		t.Fatalf("leader %d of epoch %d (%v) after the leader of %d promised %d", l2, e2, err, epoch, epoch+1)
	}
	checkConsistent(t, c, cl, acked)
}

// TestUnsendableWriteIsRefused: a key or value that is not valid UTF-8
// cannot travel in a protobuf string. Written through the leader it would
// be applied there and then stop replication for good (no Append holding
// it can be encoded); through a follower it could never reach the leader.
// Each must be refused at once with ErrBadRequest, wherever it enters, and
// the cluster go on.
func TestUnsendableWriteIsRefused(t *testing.T) {
	c := newCluster(t, Etcd, 3)
	ld := leaderOf(t, c)
	f := followers(t, c)[0]
	mustPut(t, c, f, "k", "before")
	for _, tc := range []struct {
		name       string
		n          int
		key, value string
	}{
		{"key through the leader", ld, "bad\xff", "v"},
		{"value through the leader", ld, "k", "bad\xfe"},
		{"key through a follower", f, "bad\xff", "v"},
		{"value through a follower", f, "k", "bad\xfe"},
	} {
		err := c.Put(ctxT(t, 5*time.Second), tc.n, tc.key, tc.value)
		if !errors.Is(err, kvstore.ErrBadRequest) || !strings.Contains(err.Error(), "not valid UTF-8") {
			t.Errorf("put of a %s: %v, want ErrBadRequest saying not valid UTF-8", tc.name, err)
		}
	}
	for _, n := range []int{ld, f} {
		if _, _, err := c.Get(ctxT(t, 5*time.Second), n, "bad\xff"); !errors.Is(err, kvstore.ErrBadRequest) {
			t.Errorf("get of a bad key through node %d: %v, want ErrBadRequest", n, err)
		}
	}
	mustPut(t, c, ld, "k", "after")
	for i := 0; i < c.Size(); i++ {
		expectGet(t, c, i, "k", "after")
	}
	if err := c.WaitHealthy(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// clientOfAll is a client with every node of c as an endpoint, closed at
// the end of the test, and the nodes' addresses.
func clientOfAll(t *testing.T, c *Cluster) (*client.Client, []string) {
	t.Helper()
	addrs := make([]string, c.Size())
	for i := range addrs {
		nd, err := c.Node(i)
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = nd.Addr()
	}
	cl, err := client.New(client.Config{Endpoints: addrs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl, addrs
}
