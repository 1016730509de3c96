package node

import (
	"time"

	"github.com/kvstore/kvstore/clock"
)

// now reads the node's clock (Config.Clock), which leases, holdings and
// session deadlines are measured on.
func (n *Node) now() clock.Instant { return n.clk.Now() }

// jumpCheck is how often a node with a session asks its clock how long the
// machine has been suspended (clock.Clock.Suspended: on Linux, one
// clock_gettime(CLOCK_BOOTTIME) system call).
const jumpCheck = 100 * time.Millisecond

// minJump is the shortest suspend a node reports and acts on. The kernel
// moves CLOCK_BOOTTIME away from the monotonic clock only on resume, so
// anything above the noise of reading the two clocks is a real suspend.
const minJump = 10 * time.Millisecond

// jumpWatch notices suspends of the machine between two of its checks:
// the node's clock ran ahead of the monotonic clock. It is the belt to the
// braces of measuring every deadline on a clock that counts suspended
// time: the node suspends at once on resume (dropping cached copies and
// leadership) and says why, instead of finding deadlines passed one by one.
type jumpWatch struct {
	clk   clock.Clock
	slept time.Duration // clk.Suspended() at the last check
}

func newJumpWatch(clk clock.Clock) *jumpWatch {
	return &jumpWatch{clk: clk, slept: clk.Suspended()}
}

// check reports how long the machine was suspended since the last check,
// if that was at least minJump.
func (w *jumpWatch) check() (time.Duration, bool) {
	s := w.clk.Suspended()
	d := s - w.slept
	if d < minJump {
		return 0, false
	}
	w.slept = s
	return d, true
}

// clockJumped reports a suspend of the machine for d: in the log and the
// metrics. The caller puts the session in doubt.
func (k *sessionKeeper) clockJumped(d time.Duration) {
	n := k.n
	n.log.Warn("clock jumped: the machine was suspended for "+d.Round(time.Millisecond).String()+
		"; dropping cached copies and leadership until the coordinator renews the session", "suspended", d)
	n.met.clockJumps.Inc()
	n.met.clockSuspended.Add(d.Seconds())
}
