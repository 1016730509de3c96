package linearizability

import (
	"fmt"
	"sort"
	"sync"
	"time"
)

// Recorder records the history of concurrent clients. It is safe for
// concurrent use. Times are nanoseconds since the recorder was created, read
// from its clock; with time.Now they are monotonic (Go subtracts monotonic
// clock readings), so they are immune to wall-clock jumps.
//
// Each operation is bracketed: [Recorder.Begin] just before the request is
// sent, then exactly one of [Pending.End], [Pending.EndUnknown] or
// [Pending.Drop] just after the outcome is known. Reading the clock outside
// the operation can only widen its interval, which is always safe.
type Recorder struct {
	now   func() time.Time
	start time.Time

	mu      sync.Mutex
	ops     []Op
	pending map[*Pending]struct{}
}

// NewRecorder returns an empty recorder whose clock is now (time.Now if nil;
// tests inject a fake clock). The recorder's start, time zero of the
// history, is the first reading of the clock.
func NewRecorder(now func() time.Time) *Recorder {
	if now == nil {
		now = time.Now
	}
	return &Recorder{now: now, start: now(), pending: make(map[*Pending]struct{})}
}

// Start is the recorder's time zero: an operation's Call and Return are
// nanoseconds since Start on the recorder's clock.
func (r *Recorder) Start() time.Time { return r.start }

func (r *Recorder) clock() int64 {
	return int64(r.now().Sub(r.start))
}

// Pending is an operation that has begun and not yet ended. Finish it with
// exactly one of End, EndUnknown or Drop; finishing it twice panics (it is a
// bug in the workload).
type Pending struct {
	r        *Recorder
	clientID int
	in       Input
	call     int64
	done     bool // guarded by r.mu
}

// Begin records that clientID is about to issue in, and returns the handle to
// finish it with. Call it before sending the request. It panics if in.Kind is
// invalid or clientID is negative.
func (r *Recorder) Begin(clientID int, in Input) *Pending {
	if !in.Kind.Valid() {
		panic(fmt.Sprintf("linearizability: Begin with invalid kind %d", uint8(in.Kind)))
	}
	if clientID < 0 {
		panic(fmt.Sprintf("linearizability: Begin with negative client id %d", clientID))
	}
	p := &Pending{r: r, clientID: clientID, in: in, call: r.clock()}
	r.mu.Lock()
	r.pending[p] = struct{}{}
	r.mu.Unlock()
	return p
}

// finish removes p from the pending set and, if keep, appends op.
func (p *Pending) finish(what string, keep bool, op Op) {
	r := p.r
	r.mu.Lock()
	defer r.mu.Unlock()
	if p.done {
		panic(fmt.Sprintf("linearizability: %s on an operation already finished: client %d %s",
			what, p.clientID, describeOp(p.in, Output{})))
	}
	p.done = true
	delete(r.pending, p)
	if keep {
		r.ops = append(r.ops, op)
	}
}

// End records that the operation completed with out, at the current time.
// If out.Unknown is set, End behaves as EndUnknown but keeps out.Err.
func (p *Pending) End(out Output) {
	if out.Unknown {
		p.endUnknown("End", out.Err)
		return
	}
	ret := p.r.clock()
	if p.in.Kind != Get {
		out = Output{Err: out.Err}
	} else if !out.Found {
		out.Value = ""
	}
	p.finish("End", true, Op{ClientID: p.clientID, Input: p.in, Output: out, Call: p.call, Return: ret})
}

// EndUnknown records that the outcome of the operation is unknown (time-out,
// connection lost after the request may have been sent): a Put or Delete may
// or may not take effect, at any time after its call, so it is kept with
// return time [Infinity]. A Get with an unknown outcome has no effect and
// tells nothing, so it is dropped.
func (p *Pending) EndUnknown() { p.endUnknown("EndUnknown", "") }

func (p *Pending) endUnknown(what, errText string) {
	if p.in.Kind == Get {
		p.finish(what, false, Op{})
		return
	}
	p.finish(what, true, Op{
		ClientID: p.clientID,
		Input:    p.in,
		Output:   Output{Unknown: true, Err: errText},
		Call:     p.call,
		Return:   Infinity,
	})
}

// Drop forgets the operation: use it for a failed read, and for a write that
// definitely did not take effect (rejected before it could be applied). A
// write whose effect is uncertain must use EndUnknown instead: dropping it
// could make a correct store look wrong.
func (p *Pending) Drop() { p.finish("Drop", false, Op{}) }

// History returns a copy of the recorded history, sorted by call time. Writes
// that have begun but not finished are included with an unknown outcome
// (they were issued and may yet take effect); unfinished reads are left out.
// It may be called while clients are still running.
func (r *Recorder) History() []Op {
	r.mu.Lock()
	ops := make([]Op, len(r.ops), len(r.ops)+len(r.pending))
	copy(ops, r.ops)
	for p := range r.pending {
		if p.in.Kind.IsWrite() {
			ops = append(ops, Op{
				ClientID: p.clientID,
				Input:    p.in,
				Output:   Output{Unknown: true, Err: "still pending when the history was taken"},
				Call:     p.call,
				Return:   Infinity,
			})
		}
	}
	r.mu.Unlock()
	sort.SliceStable(ops, func(i, j int) bool {
		if ops[i].Call != ops[j].Call {
			return ops[i].Call < ops[j].Call
		}
		return ops[i].ClientID < ops[j].ClientID
	})
	return ops
}
