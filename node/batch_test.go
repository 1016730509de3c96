package node

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/kvstore/kvstore/rpc"
	"github.com/kvstore/kvstore/store"
)

// TestAppendBatchesStayUnderTheByteBudget builds the Appends a follower far
// behind receives: each one holds at most MaxBatchBytes of keys, values and
// request ids (an entry over the budget travels alone), they follow each
// other without a gap, and together they carry every entry. Without the
// budget, 1024 values of 1 MiB would make a 1 GiB Append, over
// rpc.MaxMsgSize, and the follower could never catch up.
func TestAppendBatchesStayUnderTheByteBudget(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxBatchBytes = 10_000
	n := &Node{cfg: cfg}
	l := &leader{n: n, epoch: 3, base: store.Version{Epoch: 2, Seq: 10}}
	sizes := []int{100, 3000, 4000, 2500, 12_000, 1, 9000, 9000, 500}
	for i, size := range sizes {
		seq := l.base.Seq + uint64(i) + 1
		l.log = append(l.log, store.Entry{Version: store.Version{Epoch: 3, Seq: seq}, Op: store.OpSet,
			Key: fmt.Sprint("k", i), Value: strings.Repeat("v", size), ReqID: fmt.Sprint("r", i)})
		l.lastSeq = seq
	}
	p := &peer{next: l.base.Seq + 1}
	var got []int
	for p.next <= l.lastSeq {
		req := l.buildAppend(p)
		if req.Snapshot != nil || len(req.Entries) == 0 {
			t.Fatalf("at seq %d: an Append with no entries (snapshot %v)", p.next, req.Snapshot != nil)
		}
		if req.Prev.Seq != p.next-1 {
			t.Fatalf("Append after %d, want after %d", req.Prev.Seq, p.next-1)
		}
		bytes := 0
		for _, e := range req.Entries {
			bytes += len(e.Key) + len(e.Value) + len(e.ReqId)
		}
		if len(req.Entries) > 1 && bytes > cfg.MaxBatchBytes {
			t.Errorf("an Append of %d entries carries %d bytes, over MaxBatchBytes %d", len(req.Entries), bytes, cfg.MaxBatchBytes)
		}
		if size := proto.Size(req); size > rpc.MaxMsgSize {
			t.Errorf("an Append of %d bytes, over rpc.MaxMsgSize", size)
		}
		got = append(got, len(req.Entries))
		p.next = req.Entries[len(req.Entries)-1].Seq + 1
	}
	// With 4 bytes of key and request id each: 104+3004+4004+2504 fit in
	// 10 000; 12 004 travels alone; then 5+9004, then 9004+504.
	if want := []int{4, 1, 2, 2}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("entries per Append %v, want %v", got, want)
	}
}
