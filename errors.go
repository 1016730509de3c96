// Package kvstore holds what both sides of KVStore share: the sentinel errors
// every API returns. The server lives in package node, the protocol in rpc,
// the coordinator backends in coord.
package kvstore

import "errors"

// Sentinel errors. Match them with errors.Is: APIs wrap them with context.
//
// Errors fall into two classes. Definite failures (ErrPartitioned before the
// request left the node, ErrNoLeader, ErrBadRequest, ErrTooLarge, ErrBusy,
// ErrStopped) mean the operation was not applied. An error that also matches
// ErrOutcomeUnknown means a write may or may not have been applied; retrying
// it with the same request id is safe, because the leader deduplicates.
var (
	// ErrPartitioned: the node cannot prove it still holds a live coordinator
	// session, so it does not serve.
	ErrPartitioned = errors.New("kvstore: node is partitioned from the coordinator")
	// ErrNoLeader: no leader was elected within the operation's deadline.
	ErrNoLeader = errors.New("kvstore: no leader")
	// ErrNoQuorum: a majority of the voters could not be reached in time.
	ErrNoQuorum = errors.New("kvstore: no quorum (a majority of voters is unreachable)")
	// ErrNotLeader: the request reached a node that no longer leads.
	ErrNotLeader = errors.New("kvstore: not the leader")
	// ErrTimeout: the operation's deadline passed.
	ErrTimeout = errors.New("kvstore: timed out")
	// ErrOutcomeUnknown: a write may or may not have been applied.
	ErrOutcomeUnknown = errors.New("kvstore: outcome unknown")
	// ErrStopped: the node was stopped or killed.
	ErrStopped = errors.New("kvstore: node stopped")
	// ErrStaleEpoch: a message from an older leader was refused.
	ErrStaleEpoch = errors.New("kvstore: stale epoch")
	// ErrBadRequest: the request is malformed (empty key, wrong cluster...).
	ErrBadRequest = errors.New("kvstore: bad request")
	// ErrTooLarge: a key, value or request is over its configured limit.
	// Nothing was applied, and a retry fails the same way.
	ErrTooLarge = errors.New("kvstore: over the size limit")
	// ErrBusy: the client already has as many requests in flight at this
	// node as the node allows. Nothing was applied; retry after a pause.
	ErrBusy = errors.New("kvstore: too many concurrent requests")
	// ErrNotVoter: a voter removal named a node that is not a voter.
	// Nothing changed.
	ErrNotVoter = errors.New("kvstore: no such voter")
	// ErrUnsafeRemoval: removing the voter would leave no voters, or
	// remaining voters without a majority of live ones (the cluster could
	// no longer commit). Nothing changed.
	ErrUnsafeRemoval = errors.New("kvstore: removal would leave no majority of live voters")
	// ErrRemoveLeader: a voter removal named the leader; stop it or make it
	// resign first, then remove it. Nothing changed.
	ErrRemoveLeader = errors.New("kvstore: the leader cannot remove itself")
	// ErrRemoved: the node was removed from the voter record and left the
	// cluster; it stopped.
	ErrRemoved = errors.New("kvstore: node removed from the cluster")
	// ErrWrongNode: a node-to-node message reached another node than the
	// one it was meant for: a node of another cluster incarnation (another
	// cluster of the same name), or a node with another id, now at an
	// address the sender still knows for the one it meant. The sender
	// treats the address as unreachable and tries again once its view of
	// the members moves on. Nothing changed.
	ErrWrongNode = errors.New("kvstore: message reached another node than meant")
)
