package client

// SetFaultRotateAnswers switches the deliberate batching bug on or off.
func SetFaultRotateAnswers(on bool) { faultRotateAnswers.Store(on) }

// SetFaultRotateStreamAnswers switches the deliberate stream bug on or off.
func SetFaultRotateStreamAnswers(on bool) { faultRotateStreamAnswers.Store(on) }

// eachStreamer calls f with each of c's streamers, reads' and writes'.
func eachStreamer(c *Client, f func(s *streamer)) {
	for _, ss := range [][]streamer{c.streams, c.wstreams} {
		for i := range ss {
			f(&ss[i])
		}
	}
}

// StreamStats returns how many request messages c sent on streams and how
// many operations they carried, over every endpoint.
func StreamStats(c *Client) (messages, ops int64) {
	eachStreamer(c, func(s *streamer) {
		messages += s.sent.Load()
		ops += s.carried.Load()
	})
	return messages, ops
}

// NoStreams makes c send its calls in batches, as to nodes without
// Stream.
func NoStreams(c *Client) {
	eachStreamer(c, func(s *streamer) {
		s.mu.Lock()
		s.off = true
		s.mu.Unlock()
	})
}

// StreamQueued returns how many operations wait in c's stream queues
// (not sent).
func StreamQueued(c *Client) int {
	n := 0
	eachStreamer(c, func(s *streamer) {
		s.mu.Lock()
		if st := s.cur; st != nil {
			st.mu.Lock()
			n += len(st.queue)
			st.mu.Unlock()
		}
		s.mu.Unlock()
	})
	return n
}

// MaxStreamOps is maxStreamOps.
const MaxStreamOps = maxStreamOps

// Streams returns how many streams c has open.
func Streams(c *Client) int {
	n := 0
	eachStreamer(c, func(s *streamer) {
		s.mu.Lock()
		if s.cur != nil {
			n++
		}
		s.mu.Unlock()
	})
	return n
}

// BatchStats returns how many Batch calls c made and how many operations
// they carried, over every endpoint.
func BatchStats(c *Client) (batches, ops int64) {
	for i := range c.batchers {
		for _, b := range []*batcher{&c.batchers[i].reads, &c.batchers[i].writes} {
			batches += b.batches.Load()
			ops += b.batched.Load()
		}
	}
	return batches, ops
}

// Queued returns how many operations wait in c's batch queues.
func Queued(c *Client) int {
	n := 0
	for i := range c.batchers {
		for _, b := range []*batcher{&c.batchers[i].reads, &c.batchers[i].writes} {
			b.mu.Lock()
			n += len(b.queue)
			b.mu.Unlock()
		}
	}
	return n
}
