package robustness

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package if any test leaves a goroutine behind: every
// node, proxy and coordinator connection must be stopped by Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
