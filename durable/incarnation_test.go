package durable

import "testing"

// TestIncarnationSurvivesReopen: a new directory records no incarnation;
// SetIncarnation records one durably (replayed from the log after a crash,
// read from the checkpoint after a close), and a later one replaces it.
func TestIncarnationSurvivesReopen(t *testing.T) {
	for _, crash := range []bool{false, true} {
		t.Run(map[bool]string{false: "close", true: "crash"}[crash], func(t *testing.T) {
			dir := t.TempDir()
			db, st := mustOpen(t, dir, Options{})
			if st.Incarnation != "" {
				t.Fatalf("new directory: incarnation %q, want none", st.Incarnation)
			}
			db, st = reopen(t, db, dir, crash)
			if st.Incarnation != "" {
				t.Fatalf("reopened before any submission: incarnation %q, want none", st.Incarnation)
			}
			mustWait(t, db.SetIncarnation("aaaa"))
			for i := 0; i < 2; i++ {
				db, st = reopen(t, db, dir, crash)
				if st.Incarnation != "aaaa" {
					t.Fatalf("reopen %d after SetIncarnation(aaaa): incarnation %q", i+1, st.Incarnation)
				}
			}
			mustWait(t, db.SetIncarnation("bbbb"))
			db, st = reopen(t, db, dir, crash)
			if st.Incarnation != "bbbb" || !st.Unreconciled {
				t.Fatalf("after SetIncarnation(bbbb): incarnation %q unreconciled %v; want bbbb, and the mark untouched", st.Incarnation, st.Unreconciled)
			}
			if err := db.SetIncarnation("").Wait(ctxT(t)); err == nil {
				t.Fatal("SetIncarnation(\"\") succeeded, want an error")
			}
			mustClose(t, db)
		})
	}
}
