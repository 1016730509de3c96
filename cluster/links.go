package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/kvstore/kvstore/faultproxy"
	"github.com/kvstore/kvstore/node"
)

// links routes every node-to-node connection through its own proxy, one per
// (source node, destination address), so that partitions and delays are real
// TCP faults. Blocking src->dst cuts src's calls to dst; dst's calls to src
// (and their replies) still flow: a one-way partition in RPC terms.
//
// Delays add up per link: the delay of every link, plus the delay of the
// source node, plus the delay of the destination node. A link's proxy
// delays each chunk in both directions, so a delayed node's calls, the
// calls it serves, and their replies are all slow.
type links struct {
	idOf func(addr string) string // a node's RPC address to its id ("" if unknown)

	mu        sync.Mutex // guards the fields below
	proxies   map[linkKey]*faultproxy.Proxy
	blocked   map[[2]string]bool // (src id, dst id)
	drop      bool               // blocked links black-hole instead of refusing
	delay     time.Duration      // on every link
	nodeDelay map[string]time.Duration
	applied   map[linkKey]time.Duration // the delay each proxy was last given
}

type linkKey struct{ src, dstAddr string }

func newLinks(c *Cluster) *links { return newLinksFor(c.idOfAddr) }

func newLinksFor(idOf func(addr string) string) *links {
	return &links{
		idOf:      idOf,
		proxies:   make(map[linkKey]*faultproxy.Proxy),
		blocked:   make(map[[2]string]bool),
		nodeDelay: make(map[string]time.Duration),
		applied:   make(map[linkKey]time.Duration),
	}
}

// dialer returns the Dial function of node src.
func (l *links) dialer(src string) func(ctx context.Context, addr string) (net.Conn, error) {
	return func(ctx context.Context, addr string) (net.Conn, error) {
		p, err := l.proxy(src, addr)
		if err != nil {
			return nil, err
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp", p.Addr())
	}
}

func (l *links) proxy(src, addr string) (*faultproxy.Proxy, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := linkKey{src, addr}
	if p := l.proxies[k]; p != nil {
		// Resolve the destination again: a node restarted on this
		// address may not have been known when the proxy was made.
		l.applyLocked(k, p)
		return p, nil
	}
	p, err := faultproxy.New(addr)
	if err != nil {
		return nil, fmt.Errorf("cluster: link %s -> %s: %w", src, addr, err)
	}
	l.proxies[k] = p
	l.applyLocked(k, p)
	return p, nil
}

// applyLocked sets one proxy to the current fault state.
func (l *links) applyLocked(k linkKey, p *faultproxy.Proxy) {
	dst := l.idOf(k.dstAddr)
	cut := dst != "" && l.blocked[[2]string{k.src, dst}]
	d := l.delay + l.nodeDelay[k.src]
	if dst != "" {
		d += l.nodeDelay[dst]
	}
	l.applied[k] = d
	p.SetDelay(d)
	if l.drop {
		p.SetDown(false)
		p.SetBlackhole(cut)
	} else {
		p.SetBlackhole(false)
		p.SetDown(cut)
	}
}

func (l *links) applyAllLocked() {
	for k, p := range l.proxies {
		l.applyLocked(k, p)
	}
}

// set replaces the blocked pairs (and the mode) and applies them.
func (l *links) set(blocked map[[2]string]bool, drop bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.blocked, l.drop = blocked, drop
	l.applyAllLocked()
}

func (l *links) setDelay(d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.delay = d
	l.applyAllLocked()
}

// setNodeDelay sets the delay of every link from or to node id.
func (l *links) setNodeDelay(id string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d > 0 {
		l.nodeDelay[id] = d
	} else {
		delete(l.nodeDelay, id)
	}
	l.applyAllLocked()
}

// clearDelays removes every delay, of all links and of each node.
func (l *links) clearDelays() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.delay = 0
	clear(l.nodeDelay)
	l.applyAllLocked()
}

// delays returns the delay each existing link was given, keyed by
// (source id, destination id); links to unknown addresses are left out.
func (l *links) delays() map[[2]string]time.Duration {
	l.mu.Lock()
	keys := make([]linkKey, 0, len(l.applied))
	ds := make([]time.Duration, 0, len(l.applied))
	for k, d := range l.applied {
		keys = append(keys, k)
		ds = append(ds, d)
	}
	l.mu.Unlock()
	out := make(map[[2]string]time.Duration, len(keys))
	for i, k := range keys {
		if dst := l.idOf(k.dstAddr); dst != "" {
			out[[2]string{k.src, dst}] = ds[i]
		}
	}
	return out
}

func (l *links) close() {
	l.mu.Lock()
	ps := l.proxies
	l.proxies = map[linkKey]*faultproxy.Proxy{}
	clear(l.applied)
	l.mu.Unlock()
	for _, p := range ps {
		_ = p.Close()
	}
}

// idOfAddr maps a node's RPC address to its id ("" if unknown).
func (c *Cluster) idOfAddr(addr string) string {
	c.mu.Lock()
	slots := append([]*slot(nil), c.slots...)
	c.mu.Unlock()
	for _, s := range slots {
		s.mu.Lock()
		nd := s.node
		s.mu.Unlock()
		if nd != nil && nd.Addr() == addr {
			return s.id
		}
	}
	return ""
}

// Partition splits the nodes into groups that cannot reach each other, in
// both directions. Nodes not named in any group form one more group. With
// drop, messages across the cut vanish (calls time out); without, the
// connections are refused (calls fail fast).
func (c *Cluster) Partition(drop bool, groups ...[]int) error {
	group := make(map[string]int)
	for gi, g := range groups {
		for _, n := range g {
			s, err := c.slot(n)
			if err != nil {
				return err
			}
			group[s.id] = gi + 1
		}
	}
	ids := c.ids()
	blocked := make(map[[2]string]bool)
	for _, a := range ids {
		for _, b := range ids {
			if a != b && group[a] != group[b] {
				blocked[[2]string{a, b}] = true
			}
		}
	}
	c.links.set(blocked, drop)
	return nil
}

// PartitionOneWay cuts the calls of every node in from to every node in
// to; calls the other way still work.
func (c *Cluster) PartitionOneWay(drop bool, from, to []int) error {
	blocked := make(map[[2]string]bool)
	if err := c.cut(blocked, from, to); err != nil {
		return err
	}
	c.links.set(blocked, drop)
	return nil
}

// cut adds to blocked the links from every node in from to every other
// node in to.
func (c *Cluster) cut(blocked map[[2]string]bool, from, to []int) error {
	for _, a := range from {
		sa, err := c.slot(a)
		if err != nil {
			return err
		}
		for _, b := range to {
			sb, err := c.slot(b)
			if err != nil {
				return err
			}
			if a != b {
				blocked[[2]string{sa.id, sb.id}] = true
			}
		}
	}
	return nil
}

// Bridge cuts the nodes of side a from those of side b, both ways, while
// bridge (and any node named on neither side) still reaches both sides: a
// bridge partition, where one node sees two groups that cannot see each
// other. The sides must not share a node, and the bridge must be on
// neither. With drop, messages across the cut vanish; without, the
// connections are refused. Like Partition, it replaces any cut in place.
func (c *Cluster) Bridge(drop bool, a, b []int, bridge int) error {
	if _, err := c.slot(bridge); err != nil {
		return err
	}
	side := make(map[int]int)
	for si, g := range [][]int{a, b} {
		for _, n := range g {
			if n == bridge {
				return fmt.Errorf("cluster: bridge node %d is on a side", n)
			}
			if prev, ok := side[n]; ok && prev != si {
				return fmt.Errorf("cluster: node %d is on both sides", n)
			}
			side[n] = si
		}
	}
	blocked := make(map[[2]string]bool)
	if err := errors.Join(c.cut(blocked, a, b), c.cut(blocked, b, a)); err != nil {
		return err
	}
	c.links.set(blocked, drop)
	return nil
}

// Pause makes node n look, to every other node and to the coordinator,
// like a paused process (SIGSTOP, a long garbage-collection pause, a frozen
// VM): every link to and from it black-holes (messages vanish, calls time
// out), its coordinator connection stalls as in ZkStall (its session
// expires by TTL), and calls through the cluster's Get, Put and Delete on
// node n wait until it resumes or their context ends (then they fail with
// the context's error: the call never reached the node). Like Partition,
// it replaces any node-to-node cut in place. Resume or Heal ends it.
//
// It is an approximation: the node's own goroutines and timers still run,
// so it notices its coordinator connection stalled and its peers silent
// and acts on it (suspends, steps down) while "paused", which a stopped
// process cannot; operations already inside the node go on; and clients
// that dial the node's address directly are not held. A real SIGSTOP of a
// node process is covered by cmd/kvstore's process tests
// (TestPausedLeaderFailover).
func (c *Cluster) Pause(n int) error {
	s, err := c.slot(n)
	if err != nil {
		return err
	}
	blocked := make(map[[2]string]bool)
	for _, id := range c.ids() {
		if id != s.id {
			blocked[[2]string{s.id, id}] = true
			blocked[[2]string{id, s.id}] = true
		}
	}
	c.links.set(blocked, true)
	if err := c.ZkStall(n); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused == nil {
		s.paused = make(chan struct{})
	}
	return nil
}

// Resume ends Pause of node n: its links and coordinator connection work
// again (every node-to-node cut is removed, as HealPartition does) and
// waiting calls go on.
func (c *Cluster) Resume(n int) error {
	s, err := c.slot(n)
	if err != nil {
		return err
	}
	c.HealPartition()
	if err := c.ZkUp(n); err != nil {
		return err
	}
	s.resume()
	return nil
}

// resume wakes the calls waiting on a paused node.
func (s *slot) resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paused != nil {
		close(s.paused)
		s.paused = nil
	}
}

// serving returns node n for a client call, first waiting while it is
// paused (Pause) until it resumes or ctx ends.
func (c *Cluster) serving(ctx context.Context, n int) (*node.Node, error) {
	s, err := c.slot(n)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	paused := s.paused
	s.mu.Unlock()
	if paused != nil {
		select {
		case <-paused:
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: node %d paused: %w", n, ctx.Err())
		}
	}
	return c.Node(n)
}

// HealPartition removes every node-to-node cut.
func (c *Cluster) HealPartition() { c.links.set(map[[2]string]bool{}, false) }

// SetLinkDelay adds d of latency to every node-to-node message (0 removes it).
func (c *Cluster) SetLinkDelay(d time.Duration) { c.links.setDelay(d) }

// SetNodeDelay adds d of latency to every message node n sends to or
// receives from another node, replies included (0 removes it); the other
// nodes' links to each other are left alone. Delays add up: a link between
// two delayed nodes carries both, plus any SetLinkDelay. The delay belongs
// to the node number, so it survives kill and restart until Heal.
func (c *Cluster) SetNodeDelay(n int, d time.Duration) error {
	s, err := c.slot(n)
	if err != nil {
		return err
	}
	c.links.setNodeDelay(s.id, d)
	return nil
}

func (c *Cluster) ids() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	ids := make([]string, len(c.slots))
	for i, s := range c.slots {
		ids[i] = s.id
	}
	return ids
}

// Heal removes every fault: partitions, pauses, delays (of every link and
// of each node), zk-down and rmi-down, and restarts killed nodes (not retired
// ones), all at once (a durable node cannot serve until a majority of the
// voters is back).
func (c *Cluster) Heal(ctx context.Context) error {
	c.HealPartition()
	c.links.clearDelays()
	var dead []int
	for _, i := range c.Active() {
		if err := c.ZkUp(i); err != nil {
			return err
		}
		if err := c.RmiUp(i); err != nil {
			return err
		}
		if s, err := c.slot(i); err == nil {
			s.resume()
		}
		if _, err := c.Node(i); err != nil {
			dead = append(dead, i)
		}
	}
	errs := make([]error, len(dead))
	var wg sync.WaitGroup
	for j, i := range dead {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[j] = c.Restart(ctx, i)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
