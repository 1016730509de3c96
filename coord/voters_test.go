package coord

import (
	"slices"
	"testing"
)

// TestVotersRecordSealMark: the record is {"ids":[...]} with
// "unsealed":true only while unsealed, so a record written before the mark
// existed, which may hold data, reads as sealed; and what EncodeVoters
// writes reads back as it was.
func TestVotersRecordSealMark(t *testing.T) {
	old, err := DecodeVoters([]byte(`{"ids":["n1","n2"]}`), 7)
	if err != nil || old.Unsealed || old.Version != 7 || !slices.Equal(old.IDs, []string{"n1", "n2"}) {
		t.Fatalf("a record from before the mark = %+v, %v; want [n1 n2], sealed, version 7", old, err)
	}
	for _, unsealed := range []bool{false, true} {
		b, err := EncodeVoters([]string{"b", "a"}, unsealed)
		if err != nil {
			t.Fatal(err)
		}
		want := `{"ids":["b","a"]}`
		if unsealed {
			want = `{"ids":["b","a"],"unsealed":true}`
		}
		if string(b) != want {
			t.Errorf("EncodeVoters(unsealed %v) = %s, want %s", unsealed, b, want)
		}
		v, err := DecodeVoters(b, 1)
		if err != nil || v.Unsealed != unsealed || !slices.Equal(v.IDs, []string{"b", "a"}) {
			t.Errorf("round trip of %s = %+v, %v", b, v, err)
		}
	}
	if b, _ := EncodeVoters(nil, false); string(b) != `{"ids":[]}` {
		t.Errorf("EncodeVoters(nil) = %s, want an empty list", b)
	}
	if _, err := DecodeVoters([]byte(`{"ids":`), 1); err == nil {
		t.Error("a truncated record decoded without error")
	}
}
