package cluster

import (
	"fmt"
	"strings"
	"testing"
)

// fakeT records what ReportOnFailure prints for a test that failed.
type fakeT struct {
	failed   bool
	logs     []string
	cleanups []func()
}

func (f *fakeT) Failed() bool { return f.failed }
func (f *fakeT) Logf(format string, args ...any) {
	f.logs = append(f.logs, fmt.Sprintf(format, args...))
}
func (f *fakeT) Cleanup(fn func()) { f.cleanups = append(f.cleanups, fn) }

func (f *fakeT) end() {
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		f.cleanups[i]()
	}
}

// A failing cluster test prints each node's state and the nodes' last log
// records; a passing one prints nothing.
func TestFailureReportNamesEveryNodesStateAndLastLogs(t *testing.T) {
	c := newCluster(t, Etcd, 2)
	ld := leaderOf(t, c)
	ring := TestLogger(&Options{})
	if ring == nil {
		t.Skip("KVSTORE_TEST_LOG is set: the logs go to standard error")
	}
	ring.Logger().Warn("something went wrong", "node", "n9")

	passed := &fakeT{}
	c.ReportOnFailure(passed, ring)
	passed.end()
	if len(passed.logs) != 0 {
		t.Errorf("a passing test printed %q", passed.logs)
	}

	failed := &fakeT{failed: true}
	c.ReportOnFailure(failed, ring)
	failed.end()
	out := strings.Join(failed.logs, "\n")
	for _, want := range []string{
		fmt.Sprintf("node %d", ld), " leader ", " follower ", "promised=", "applied=", "sees-leader=",
		"something went wrong node=n9",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("the report lacks %q:\n%s", want, out)
		}
	}
}
