// Package nemesis plays random fault schedules against a cluster, in the
// style of Jepsen's nemeses and etcd's robustness failpoints. A schedule is
// generated from a seed, so a failing run can be replayed exactly (the
// targets named "leader" are resolved when the fault is injected). Each step
// injects one fault, holds it, heals it, and waits until the cluster is
// healthy again before the next step.
//
// Each fault is a value of the Fault interface, one file per family:
// crash.go (a node or every node crashed), disk.go (a data directory lost),
// membership.go (a node replaced, a voter removed), network.go (partitions,
// bridges, one-way cuts, delays, a node's inbound RPC off), coordinator.go
// (nodes cut from or stalled on the coordinator), pause.go (a paused
// leader) and handover.go (a leader that resigns while a follower is cut
// off). Faults lists them all; ByName finds one by the name a printed
// schedule, KVSTORE_KINDS and a replay command use.
//
// Some faults change the membership: a node is retired for good and a new
// one takes its place. A step's node i is therefore the i-th node of
// Target.Active when the step is injected, not a fixed node number.
package nemesis
