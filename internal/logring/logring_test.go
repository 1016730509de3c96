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

// Warnings and errors are tallied over the whole run, by message, with the
// first record of each, even once the ring no longer holds them.
func TestTalliesWarningsAndErrorsSinceTheStart(t *testing.T) {
	r := New(2)
	log := r.Logger()
	log.Error("cannot lead", "promised", 748)
	for i := range 3 {
		log.Warn("takeover failed", "epoch", 560+i)
	}
	log.Info("elected")
	log.Error("cannot lead", "promised", 749)
	log.Debug("quiet")
	got := r.Notable()
	for _, want := range []string{"     2x ", "ERROR cannot lead promised=748", "     3x ", "WARN  takeover failed epoch=560"} {
		if !strings.Contains(got, want) {
			t.Errorf("Notable() = %q, want it to contain %q", got, want)
		}
	}
	if strings.Index(got, "cannot lead") > strings.Index(got, "takeover failed") {
		t.Errorf("Notable() = %q: not in the order first logged", got)
	}
	if strings.Contains(got, "elected") || strings.Contains(got, "quiet") {
		t.Errorf("Notable() = %q holds records below WARN", got)
	}
	if s := r.String(); !strings.HasPrefix(s, got) || !strings.Contains(s, "last 2 log records") {
		t.Errorf("String() = %q, want Notable, then the last records", s)
	}
	if New(1).Notable() != "" {
		t.Error("Notable of a fresh ring is not empty")
	}
}
