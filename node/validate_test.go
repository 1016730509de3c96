package node

import (
	"errors"
	"strings"
	"testing"

	"github.com/kvstore/kvstore"
)

// TestCheckKey is the table of the one key validator: the same rules
// under the client API's limit (ErrTooLarge past MaxKeySize) and under the
// limit of every node (ErrBadRequest past maxKeyLen), for keys and node ids.
func TestCheckKey(t *testing.T) {
	client := keyLimit{max: 4, name: "MaxKeySize", err: kvstore.ErrTooLarge}
	for _, tc := range []struct {
		what, key string
		lim       keyLimit
		want      error
		msg       string // a part of the error's text
	}{
		{"key", "k", client, nil, ""},
		{"key", "kkkk", client, nil, ""},
		{"key", "", client, kvstore.ErrBadRequest, "empty key"},
		{"key", "kkkkk", client, kvstore.ErrTooLarge, "key of 5 bytes (MaxKeySize 4)"},
		{"key", "k\xff", client, kvstore.ErrBadRequest, "is not valid UTF-8"},
		// Too long is checked before UTF-8: the size is what the client
		// can act on.
		{"key", "kkkk\xff", client, kvstore.ErrTooLarge, "MaxKeySize"},
		{"key", strings.Repeat("k", maxKeyLen), storedKeys, nil, ""},
		{"key", strings.Repeat("k", maxKeyLen+1), storedKeys, kvstore.ErrBadRequest, "bytes (at most"},
		{"key", "", storedKeys, kvstore.ErrBadRequest, "empty key"},
		{"node id", "", storedKeys, kvstore.ErrBadRequest, "empty node id"},
		{"node id", strings.Repeat("n", maxKeyLen+1), storedKeys, kvstore.ErrBadRequest, "node id of"},
		{"node id", "n1", storedKeys, nil, ""},
	} {
		err := checkKey(tc.what, tc.key, tc.lim)
		if tc.want == nil {
			if err != nil {
				t.Errorf("checkKey(%q, %.20q, %v) = %v, want nil", tc.what, tc.key, tc.lim.name, err)
			}
			continue
		}
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("checkKey(%q, %.20q, %v) = %v, want %v with %q", tc.what, tc.key, tc.lim.name, err, tc.want, tc.msg)
		}
	}
}
