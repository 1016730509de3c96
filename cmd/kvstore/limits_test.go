package main

import (
	"strings"
	"testing"
)

// Bad limit flags are command-line errors (exit 2) naming the flag, found
// before the node reaches for its coordinator.
func TestNodeLimitFlagErrors(t *testing.T) {
	bin := buildBinary(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-key-size", "0"}, "--max-key-size 0: must be in [1, 32768]"},
		{[]string{"--max-key-size", "40000"}, "--max-key-size 40000: must be in [1, 32768]"},
		{[]string{"--max-value-size", "-1"}, "--max-value-size -1: must not be negative"},
		{[]string{"--max-request-size", "100", "--max-key-size", "100"}, "--max-request-size 100: must exceed --max-key-size 100"},
		{[]string{"--max-client-requests", "0"}, "--max-client-requests 0: must be positive"},
		{[]string{"--max-key-size", "many"}, "invalid argument \"many\""},
	} {
		args := append([]string{"node", "--id", "a", "--etcd", "127.0.0.1:1"}, tc.args...)
		out, code := runExit(t, bin, args...)
		if code != exitUsage || !strings.Contains(out, tc.want) {
			t.Errorf("kvstore %q: exit %d, output %q; want exit %d mentioning %q", args, code, out, exitUsage, tc.want)
		}
	}
}
