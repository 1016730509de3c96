package node

import "slices"

// commitWaiters are the waits for the leader's commit index to reach a
// seq: each wait's channel is closed when the commit index reaches it, so
// a write waiting for its majority wakes once, when it has one, rather
// than at every step of the replication (an answer of a follower, an
// entry of another write), each of which woke every waiting writer to
// take the leader's lock and look. The leader's l.mu guards it.
type commitWaiters struct {
	seqs []uint64                 // the seqs waited for, ascending
	chs  map[uint64]chan struct{} // seq -> the channel closed when it commits
}

// wait returns the channel closed when the commit index reaches seq.
func (w *commitWaiters) wait(seq uint64) <-chan struct{} {
	if ch := w.chs[seq]; ch != nil {
		return ch
	}
	if w.chs == nil {
		w.chs = make(map[uint64]chan struct{})
	}
	ch := make(chan struct{})
	w.chs[seq] = ch
	i, _ := slices.BinarySearch(w.seqs, seq)
	w.seqs = slices.Insert(w.seqs, i, seq)
	return ch
}

// release closes the channels of every seq up to commit.
func (w *commitWaiters) release(commit uint64) {
	i := 0
	for ; i < len(w.seqs) && w.seqs[i] <= commit; i++ {
		close(w.chs[w.seqs[i]])
		delete(w.chs, w.seqs[i])
	}
	if i > 0 {
		w.seqs = slices.Delete(w.seqs, 0, i)
	}
}
