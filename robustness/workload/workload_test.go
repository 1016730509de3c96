package workload

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/kvstore/kvstore"
	"github.com/kvstore/kvstore/robustness/linearizability"
)

// memory is a Client over one map: linearizable by construction. Every
// 7th write is applied but answered with an unknown outcome, every 11th
// refused without being applied, every 13th read answered with an unknown
// outcome; it records which node each client's calls went to, and calls
// stop once it had enough calls.
type memory struct {
	mu     sync.Mutex
	size   int
	kv     map[string]string
	calls  int
	nodes  map[int]bool // nodes called
	writes map[int]int  // writes by node
	enough int
	stop   func()
}

func (m *memory) Size() int { return m.size }

func (m *memory) call(n int, write bool) int {
	m.calls++
	if m.calls == m.enough {
		m.stop()
	}
	m.nodes[n] = true
	if write {
		m.writes[n]++
	}
	return m.calls
}

func (m *memory) Get(_ context.Context, n int, key string) (string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.call(n, false)%13 == 0 {
		return "", false, fmt.Errorf("get: %w", kvstore.ErrOutcomeUnknown)
	}
	v, ok := m.kv[key]
	return v, ok, nil
}

func (m *memory) write(n int, apply func()) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch c := m.call(n, true); {
	case c%11 == 0:
		return errors.New("refused")
	case c%7 == 0:
		apply()
		return fmt.Errorf("write: %w", kvstore.ErrOutcomeUnknown)
	}
	apply()
	return nil
}

func (m *memory) Put(_ context.Context, n int, key, value string) error {
	return m.write(n, func() { m.kv[key] = value })
}

func (m *memory) Delete(_ context.Context, n int, key string) error {
	return m.write(n, func() { delete(m.kv, key) })
}

// TestRunRecordsWhatClientsSaw runs the workload against a linearizable
// store and checks what it recorded: every operation but the failed ones,
// the unknown outcomes as such, a linearizable history, reads only from
// the readers, and the clients spread over every node.
func TestRunRecordsWhatClientsSaw(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := &memory{size: 3, kv: map[string]string{}, nodes: map[int]bool{}, writes: map[int]int{}, enough: 300, stop: cancel}
	rec := linearizability.NewRecorder(nil)
	w := Workload{Clients: 6, Readers: 3, Keys: 3, OpTimeout: time.Second, Pause: time.Millisecond, Seed: 1}
	st := w.Run(ctx, m, rec)
	h := rec.History()
	if m.calls < m.enough {
		t.Fatalf("%d calls in a minute, want %d", m.calls, m.enough)
	}
	if st.Failed == 0 || st.Unknown == 0 {
		t.Fatalf("stats %+v: want operations, some failed, some unknown", st)
	}
	if int64(len(h)) != st.Ops-st.Failed {
		t.Fatalf("%d operations recorded, want %d (%d, less %d failed)", len(h), st.Ops-st.Failed, st.Ops, st.Failed)
	}
	var unknown int64
	for _, op := range h {
		if op.Output.Unknown {
			unknown++
			if !op.Input.Kind.IsWrite() {
				t.Fatalf("a read recorded with an unknown outcome: %+v", op)
			}
		}
		if op.ClientID >= w.Clients-w.Readers && op.Input.Kind.IsWrite() {
			t.Fatalf("reader %d wrote: %+v", op.ClientID, op)
		}
	}
	if unknown != st.Unknown {
		t.Fatalf("%d unknown outcomes recorded, stats say %d", unknown, st.Unknown)
	}
	if res := linearizability.Check(context.Background(), h, 10*time.Second); !res.Ok {
		t.Fatalf("history of a linearizable store: %v", res)
	}
	if len(m.nodes) != m.size || len(m.writes) != m.size {
		t.Fatalf("nodes called %v, written through %v: want all %d", m.nodes, m.writes, m.size)
	}
}
