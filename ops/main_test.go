package ops_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if a test leaves a goroutine behind: a closed
// Server, its connections included, must be gone.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
