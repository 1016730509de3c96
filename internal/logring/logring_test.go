package logring

import (
	"fmt"
	"strings"
	"testing"
)

func TestKeepsTheLastRecordsInOrder(t *testing.T) {
	r := New(3)
	log := r.Logger().With("node", "n1").WithGroup("g")
	for i := range 5 {
		log.Info(fmt.Sprintf("m%d", i), "k", i)
	}
	got := r.Lines()
	if len(got) != 3 {
		t.Fatalf("kept %d lines, want 3: %q", len(got), got)
	}
	for i, line := range got {
		want := fmt.Sprintf("m%d node=n1 g.k=%d", i+2, i+2)
		if !strings.HasSuffix(line, want) {
			t.Errorf("line %d = %q, want it to end with %q", i, line, want)
		}
	}
	if s := r.String(); !strings.Contains(s, "last 3 log records") || !strings.Contains(s, "m4") {
		t.Errorf("String() = %q", s)
	}
}

func TestFewerRecordsThanSize(t *testing.T) {
	r := New(10)
	r.Logger().Debug("only")
	if got := r.Lines(); len(got) != 1 || !strings.Contains(got[0], "DEBUG only") {
		t.Errorf("Lines() = %q", got)
	}
}
