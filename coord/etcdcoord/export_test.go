package etcdcoord

// Stalled returns the members (by address) the client's calls skip.
func (c *Coordinator) Stalled() []string {
	marked, _ := c.stalls.list()
	return marked
}
