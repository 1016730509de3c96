// Package rpc holds the node-to-node transport around the generated code in
// kvpb: the one table that maps KVStore's sentinel errors to gRPC status and
// back, and the client connection pool.
package rpc

import (
	"cmp"
	"context"
	"errors"

	"github.com/kvstore/kvstore"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Domain is the ErrorInfo domain of every sentinel KVStore sends.
const Domain = "kvstore"

// ClusterHeader is the gRPC metadata key under which a client names the
// cluster it means (client.Config.Cluster); a node of another cluster
// refuses the call with kvstore.ErrWrongNode.
const ClusterHeader = "kvstore-cluster"

// table maps each sentinel to the gRPC code it travels as and to the reason
// that names it on the wire: an errdetails.ErrorInfo{Reason, Domain} in the
// status details. The reasons are part of the protocol: never rename or
// reuse one. The message carries the error's text for people to read; it is
// never searched for a sentinel.
var table = []struct {
	err    error
	code   codes.Code
	reason string
}{
	{kvstore.ErrPartitioned, codes.Unavailable, "PARTITIONED"},
	{kvstore.ErrNoLeader, codes.Unavailable, "NO_LEADER"},
	{kvstore.ErrNoQuorum, codes.Unavailable, "NO_QUORUM"},
	{kvstore.ErrNotLeader, codes.FailedPrecondition, "NOT_LEADER"},
	{kvstore.ErrTimeout, codes.DeadlineExceeded, "TIMEOUT"},
	{kvstore.ErrOutcomeUnknown, codes.Unknown, "OUTCOME_UNKNOWN"},
	{kvstore.ErrStopped, codes.Unavailable, "STOPPED"},
	{kvstore.ErrStaleEpoch, codes.FailedPrecondition, "STALE_EPOCH"},
	{kvstore.ErrBadRequest, codes.InvalidArgument, "BAD_REQUEST"},
	{kvstore.ErrTooLarge, codes.InvalidArgument, "TOO_LARGE"},
	{kvstore.ErrBusy, codes.ResourceExhausted, "BUSY"},
	{kvstore.ErrNotVoter, codes.NotFound, "NOT_VOTER"},
	{kvstore.ErrUnsafeRemoval, codes.FailedPrecondition, "UNSAFE_REMOVAL"},
	{kvstore.ErrRemoveLeader, codes.FailedPrecondition, "REMOVE_LEADER"},
	{kvstore.ErrRemoved, codes.Unavailable, "REMOVED"},
	{kvstore.ErrWrongNode, codes.Unavailable, "WRONG_NODE"},
}

// ToStatus converts an error returned by a node into a gRPC status error.
// Every sentinel the error matches is kept, as one ErrorInfo detail each, so
// that, for example, "outcome unknown" and "no quorum" both survive the trip;
// the code is the first matched sentinel's. The message is the error's text.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isSentinel(err) {
		return err
	}
	code := codes.Unknown
	var infos []*errdetails.ErrorInfo
	for _, t := range table {
		if errors.Is(err, t.err) {
			if infos == nil {
				code = t.code
			}
			infos = append(infos, &errdetails.ErrorInfo{Reason: t.reason, Domain: Domain})
		}
	}
	switch {
	case infos != nil:
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	st := status.New(code, err.Error())
	for _, info := range infos {
		// WithDetails fails only if a detail cannot be marshaled,
		// which an ErrorInfo always can.
		if withInfo, derr := st.WithDetails(info); derr == nil {
			st = withInfo
		}
	}
	return st.Err()
}

// MarshalStatus is ToStatus(err) serialized as a google.rpc.Status, for
// an error that travels inside a message (kvpb.BatchResult) rather than as
// a call's status; UnmarshalStatus undoes it. nil for a nil err.
func MarshalStatus(err error) []byte {
	if err == nil {
		return nil
	}
	st, _ := status.FromError(ToStatus(err))
	b, merr := proto.Marshal(st.Proto())
	if merr != nil || len(b) == 0 {
		// A message that is not UTF-8 does not marshal: keep the code
		// alone, never nothing (which would read as success).
		b, _ = proto.Marshal(&spb.Status{Code: int32(cmp.Or(st.Code(), codes.Unknown))})
	}
	return b
}

// UnmarshalStatus turns MarshalStatus's bytes back into the error the call
// would have returned (a gRPC status error: FromStatus and Typed apply);
// nil for empty b.
func UnmarshalStatus(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	var p spb.Status
	if err := proto.Unmarshal(b, &p); err != nil {
		return status.Errorf(codes.Internal, "undecodable error status in a batch answer: %v", err)
	}
	if p.Code == int32(codes.OK) {
		return status.Error(codes.Internal, "a batch answer's error status has code OK")
	}
	return status.FromProto(&p).Err()
}

func isSentinel(err error) bool {
	for _, t := range table {
		if errors.Is(err, t.err) {
			return true
		}
	}
	return false
}

// FromStatus converts a gRPC error back into an error matching every
// sentinel its details name (an ErrorInfo of Domain with a reason of the
// table). An error that names none is returned as it is, whatever its message
// says: a failure of the transport or of the caller's deadline, an answer of
// a server that is not a node, or a status from a node older than the
// details. The caller judges those by their gRPC code alone (for a write,
// that means outcome unknown unless the request never left), which may lose
// precision but never reads a definite answer into one. A reason this
// version does not know (a newer node's) is passed over likewise.
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	matched := sentinels(st)
	if len(matched) == 0 {
		return err
	}
	return &remoteError{msg: st.Message(), sentinels: matched}
}

// Typed reports whether err is a gRPC status whose details name a sentinel:
// an answer the node itself gave, as opposed to a failure of the transport or
// of the caller's own deadline, which name none.
func Typed(err error) bool {
	if err == nil {
		return false
	}
	st, ok := status.FromError(err)
	return ok && len(sentinels(st)) > 0
}

// sentinels returns the sentinels st's details name, in the table's order.
func sentinels(st *status.Status) []error {
	reasons := map[string]bool{}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == Domain {
			reasons[info.GetReason()] = true
		}
	}
	var matched []error
	for _, t := range table {
		if reasons[t.reason] {
			matched = append(matched, t.err)
		}
	}
	return matched
}

// remoteError is an error received from a peer: its text as sent, matching
// (errors.Is) every sentinel its status details name.
type remoteError struct {
	msg       string
	sentinels []error
}

func (e *remoteError) Error() string   { return e.msg }
func (e *remoteError) Unwrap() []error { return e.sentinels }
