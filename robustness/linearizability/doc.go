// Package linearizability proves (or refutes) that a history of get, put and
// delete operations observed by concurrent clients of the store is
// linearizable, in the style of etcd's robustness tests and porcupine's own
// tests. It provides the sequential model ([Model]), a concurrent history
// recorder ([Recorder]), the checker ([Check]), a post-heal durability check
// ([Durability]) and a JSON format for saving and replaying histories
// ([SaveHistory], [LoadHistory]).
//
// # Workflow
//
//	rec := linearizability.NewRecorder(nil)
//	// in each client goroutine:
//	p := rec.Begin(clientID, linearizability.Input{Kind: linearizability.Put, Key: k, Value: v})
//	err := client.Put(ctx, k, v)
//	switch {
//	case err == nil:
//		p.End(linearizability.Output{})
//	case errors.Is(err, kvstore.ErrOutcomeUnknown), transportError(err):
//		p.EndUnknown() // may or may not have been applied
//	default:
//		p.Drop() // definitely not applied
//	}
//	// after the run:
//	h := rec.History()
//	res := linearizability.Check(ctx, h, time.Minute, linearizability.VisualizationDir(dir))
//	if !res.Ok { // also false when res.Unknown: a timeout is not a pass
//		_ = linearizability.SaveHistory(filepath.Join(dir, "history.json"), h)
//		t.Fatal(res)
//	}
//	// after healing, read every key from every node:
//	if err := linearizability.Durability(h, finalStateOfNode); err != nil { t.Fatal(err) }
//
// # Per-key partition
//
// Linearizability is local (Herlihy and Wing): a history is linearizable if
// and only if, for every object, the sub-history of operations on that object
// is linearizable. Each key is an independent register, so the model
// partitions the history by key and porcupine checks every key separately
// (and in parallel). The state of one partition is just (value, present).
// This turns one search that is exponential in the number of concurrent
// operations on all keys into many small searches, which is what makes
// checking histories of thousands of operations feasible.
//
// # Unique written values
//
// The workload is expected to write a value that is unique per key (for
// example "c<client>-<seq>"). A read then names the one write it observed,
// which keeps the search narrow and lets the durability check tell a lost
// write from an overwritten one. Nothing here is unsound when values repeat:
// the checker still only accepts linearizable histories (it checks values,
// not write identities) and [Durability] never reports a false violation,
// but it may then miss some (a lost write whose value was also written by
// another candidate write looks explained).
//
// # Unknown outcomes
//
// A write whose outcome is unknown (time-out, connection lost after the
// request was sent, kvstore.ErrOutcomeUnknown) may have been applied, may be
// applied later (the request can still be in flight, or be retried by the
// leader) or may never be applied. Following etcd and Jepsen, such an
// operation is kept in the history with its real call time but a return time
// of [Infinity]: it may be linearized at any point after it was invoked. The
// model's step for it is deterministic (it takes effect), which is enough:
// linearizing it after every other operation of its key is observationally
// the same as it never taking effect, so both possibilities are explored
// without making the model nondeterministic.
//
// A read has no effect, so a read whose outcome is unknown, or which failed,
// carries no information and is dropped ([Pending.Drop]; [Pending.EndUnknown]
// drops reads automatically and [Check] ignores any that remain). A write
// that failed definitely (rejected before it could be applied) is dropped too.
//
// Before checking, unknown-outcome puts whose value no read of that key ever
// returned are removed: such a put can always be linearized last, so it
// cannot make a history linearizable or not (this holds even if values repeat,
// because the test is on the value). This is etcd's optimisation and keeps
// histories with many time-outs cheap to check. Unknown-outcome deletes are
// always kept, since absence carries no identity.
//
// # Results
//
// Checking linearizability is NP-complete, so [Check] takes a time limit.
// Its [Result] has three outcomes: Ok (proven linearizable), Illegal (a
// counter-example exists; porcupine's HTML visualisation is written and its
// path returned) and Unknown (the checker ran out of time or was cancelled).
// Unknown is NOT a pass: Result.Ok is false.
//
// # Durability
//
// Linearizability alone says nothing about what the store holds once the
// operations have stopped. [Durability] checks the final state read after
// healing against the writes in the history; its doc comment states the rule.
// [AppendFinalReads] gives a stronger (but search-based) variant: it appends
// the final state as reads that happen after every operation, so [Check] also
// takes the reads of the history into account.
package linearizability
