// Package rpc holds the node-to-node transport around the generated code in
// kvpb: the one table that maps KVStore's sentinel errors to gRPC status and
// back, and the client connection pool.
package rpc

import (
	"context"
	"errors"
	"strings"

	"github.com/kvstore/kvstore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// table maps each sentinel to the gRPC code it travels as. The status message
// carries the sentinel's text, which is how FromStatus finds it again.
var table = []struct {
	err  error
	code codes.Code
}{
	{kvstore.ErrPartitioned, codes.Unavailable},
	{kvstore.ErrNoLeader, codes.Unavailable},
	{kvstore.ErrNoQuorum, codes.Unavailable},
	{kvstore.ErrNotLeader, codes.FailedPrecondition},
	{kvstore.ErrTimeout, codes.DeadlineExceeded},
	{kvstore.ErrOutcomeUnknown, codes.Unknown},
	{kvstore.ErrStopped, codes.Unavailable},
	{kvstore.ErrStaleEpoch, codes.FailedPrecondition},
	{kvstore.ErrBadRequest, codes.InvalidArgument},
	{kvstore.ErrTooLarge, codes.InvalidArgument},
	{kvstore.ErrBusy, codes.ResourceExhausted},
	{kvstore.ErrNotVoter, codes.NotFound},
	{kvstore.ErrUnsafeRemoval, codes.FailedPrecondition},
	{kvstore.ErrRemoveLeader, codes.FailedPrecondition},
	{kvstore.ErrRemoved, codes.Unavailable},
}

// ToStatus converts an error returned by a node into a gRPC status error.
// Every sentinel the error matches is kept (joined in the message) so that,
// for example, "outcome unknown" and "no quorum" both survive the trip.
func ToStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok && !isSentinel(err) {
		return err
	}
	code := codes.Unknown
	found := false
	for _, t := range table {
		if errors.Is(err, t.err) {
			if !found {
				code = t.code
				found = true
			}
		}
	}
	switch {
	case found:
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	}
	return status.Error(code, err.Error())
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
// sentinel named in its message. Transport errors that name no sentinel are
// returned as they are (callers treat them as "outcome unknown" for writes).
func FromStatus(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	var matched []error
	for _, t := range table {
		if containsText(msg, t.err.Error()) {
			matched = append(matched, t.err)
		}
	}
	if len(matched) == 0 {
		return err
	}
	return &remoteError{msg: msg, sentinels: matched}
}

// Typed reports whether err is a gRPC status whose message names a
// sentinel: an answer the node itself gave, as opposed to a failure of the
// transport or of the caller's own deadline, which name none.
func Typed(err error) bool {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return false
	}
	for _, t := range table {
		if containsText(st.Message(), t.err.Error()) {
			return true
		}
	}
	return false
}

// remoteError is an error received from a peer: its text as sent, matching
// (errors.Is) every sentinel the text names.
type remoteError struct {
	msg       string
	sentinels []error
}

func (e *remoteError) Error() string   { return e.msg }
func (e *remoteError) Unwrap() []error { return e.sentinels }

func containsText(s, sub string) bool { return strings.Contains(s, sub) }
