package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestHealthcheck checks that `kvstore healthcheck` exits 0 only when the
// URL answers 200: a 503 (a node not ready), a refused connection and an
// answer slower than --timeout each fail, so a container's healthcheck
// reports the node unhealthy.
func TestHealthcheck(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	defer ok.Close()
	notReady := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "not serving", http.StatusServiceUnavailable)
	}))
	defer notReady.Close()
	hang := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	defer close(hang)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String() + "/readyz"
	ln.Close()

	for _, c := range []struct {
		args []string
		code int
		out  string
	}{
		{[]string{ok.URL + "/readyz"}, 0, "200 OK"},
		{[]string{notReady.URL + "/readyz"}, exitFailed, "503 Service Unavailable: not serving"},
		{[]string{refused}, exitFailed, "connection refused"},
		{[]string{"--timeout", "100ms", slow.URL}, exitFailed, "deadline exceeded"},
		{[]string{"--timeout", "0s", ok.URL}, exitUsage, "must be positive"},
		{[]string{}, exitUsage, ""},
	} {
		out, code := runKVStore(t, append([]string{"healthcheck"}, c.args...)...)
		if code != c.code || !strings.Contains(out, c.out) {
			t.Errorf("kvstore healthcheck %v: exit %d, output %q; want exit %d and %q", c.args, code, out, c.code, c.out)
		}
	}
}
