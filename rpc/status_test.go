package rpc

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/kvstore/kvstore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestEverySentinelSurvivesTheWire(t *testing.T) {
	for _, tc := range table {
		wrapped := fmt.Errorf("node n1: %w", tc.err)
		st := ToStatus(wrapped)
		if got := status.Code(st); got != tc.code {
			t.Errorf("%v travels as %v, want %v", tc.err, got, tc.code)
		}
		back := FromStatus(st)
		if !errors.Is(back, tc.err) {
			t.Errorf("%v did not survive the round trip: %v", tc.err, back)
		}
	}
}

func TestOutcomeUnknownKeepsItsCause(t *testing.T) {
	err := fmt.Errorf("%w: %w", kvstore.ErrOutcomeUnknown, kvstore.ErrNoQuorum)
	back := FromStatus(ToStatus(err))
	if !errors.Is(back, kvstore.ErrOutcomeUnknown) || !errors.Is(back, kvstore.ErrNoQuorum) {
		t.Fatalf("lost a sentinel: %v", back)
	}
	if errors.Is(back, kvstore.ErrPartitioned) {
		t.Fatalf("gained a sentinel: %v", back)
	}
}

func TestPlainErrors(t *testing.T) {
	if ToStatus(nil) != nil || FromStatus(nil) != nil {
		t.Fatal("nil must stay nil")
	}
	if c := status.Code(ToStatus(context.DeadlineExceeded)); c != codes.DeadlineExceeded {
		t.Fatalf("deadline travels as %v", c)
	}
	transport := status.Error(codes.Unavailable, "connection refused")
	if got := FromStatus(transport); got != transport {
		t.Fatalf("a transport error was rewritten: %v", got)
	}
}
