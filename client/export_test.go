package client

// SetFaultRotateAnswers switches the deliberate batching bug on or off.
func SetFaultRotateAnswers(on bool) { faultRotateAnswers.Store(on) }

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
