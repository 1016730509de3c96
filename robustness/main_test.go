package robustness

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/kvstore/kvstore/cluster"
	"github.com/kvstore/kvstore/zkserver"
)

// testZK is the package's ZooKeeper server, started by the first run that
// needs it.
var testZK zkserver.Shared

// TestMain fails the package if any test leaves a goroutine behind: every
// node, proxy and coordinator connection must be stopped by Close.
func TestMain(m *testing.M) {
	code := m.Run()
	if err := testZK.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "close ZooKeeper:", err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines leaked:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// eachBackendParallel runs f once per coordinator backend, as subtests
// named after it (ZooKeeper skipped where it is not installed, failing
// where KVSTORE_REQUIRE_ZOOKEEPER is set), in parallel with each other;
// they start once the calling test function returns, so the caller reports
// on them in a t.Cleanup.
func eachBackendParallel(t *testing.T, f func(t *testing.T, b cluster.Backend)) {
	for _, b := range cluster.Backends {
		t.Run(string(b), func(t *testing.T) {
			if b == cluster.ZooKeeper {
				zkserver.SkipIfUnavailable(t)
			}
			t.Parallel()
			f(t, b)
		})
	}
}
