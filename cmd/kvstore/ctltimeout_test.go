package main

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// runCtl runs the binary with args and returns its exit code, stderr and
// how long it ran.
func runCtl(t *testing.T, bin string, args ...string) (code int, stderr string, took time.Duration) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	code, err := processExit(cmd.Run())
	took = time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	return code, errOut.String(), took
}

// TestCtlFailsFastWhenEveryEndpointRefuses: against closed loopback ports
// (nothing listens) a command fails at once, well before --dial-timeout,
// with the refusal and the endpoints in the error, instead of retrying
// until the command timeout.
func TestCtlFailsFastWhenEveryEndpointRefuses(t *testing.T) {
	bin := buildBinary(t)
	dead1, dead2 := freeAddr(t), freeAddr(t)
	const dial = 10 * time.Second
	for _, args := range [][]string{
		{"get", "k"},
		{"put", "k", "v"},
		{"delete", "k"},
		{"leader"},
		{"members"},
	} {
		args = append(args, "--endpoints", dead1+","+dead2, "--dial-timeout", dial.String(), "--command-timeout", "30s")
		code, stderr, took := runCtl(t, bin, args...)
		if code != exitFailed {
			t.Errorf("%v: exit %d, want %d; stderr %q", args, code, exitFailed, stderr)
		}
		for _, want := range []string{"connection refused", dead1, dead2} {
			if !strings.Contains(stderr, want) {
				t.Errorf("%v: stderr %q does not say %q", args, stderr, want)
			}
		}
		if took >= dial {
			t.Errorf("%v: took %v, want less than --dial-timeout %v", args, took, dial)
		}
		t.Logf("%v: failed after %v: %s", args[0], took, strings.TrimSpace(stderr))
	}
}

// TestCtlDialTimeoutOnBlackHole: an endpoint that accepts TCP connections
// but never speaks (a listener nobody accepts from) makes a command fail
// after about --dial-timeout, not after --command-timeout.
func TestCtlDialTimeoutOnBlackHole(t *testing.T) {
	bin := buildBinary(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close() // never accepts: the kernel completes handshakes, no one answers
	const dial, command = 1500 * time.Millisecond, 30 * time.Second
	code, stderr, took := runCtl(t, bin, "get", "k", "--endpoints", l.Addr().String(),
		"--dial-timeout", dial.String(), "--command-timeout", command.String())
	if code != exitFailed {
		t.Errorf("exit %d, want %d; stderr %q", code, exitFailed, stderr)
	}
	if !strings.Contains(stderr, "dial timeout") || !strings.Contains(stderr, l.Addr().String()) {
		t.Errorf("stderr %q does not name the dial timeout and the endpoint", stderr)
	}
	// About the dial timeout: not before it, and far from the command
	// timeout (one connect attempt and one retry round of slack).
	if took < dial || took > dial+5*time.Second {
		t.Errorf("took %v, want about --dial-timeout %v (command timeout %v)", took, dial, command)
	}
	t.Logf("failed after %v: %s", took, strings.TrimSpace(stderr))
}

// TestCtlTimeoutFlagsValidated: negative or zero timeouts are a bad
// command line (exit 2) with an error naming the flag; --timeout still
// works as the old name of --command-timeout.
func TestCtlTimeoutFlagsValidated(t *testing.T) {
	bin := buildBinary(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"get", "k", "--dial-timeout", "-1s"}, "--dial-timeout must be positive"},
		{[]string{"get", "k", "--dial-timeout", "0s"}, "--dial-timeout must be positive"},
		{[]string{"put", "k", "v", "--command-timeout", "-5s"}, "--command-timeout must be positive"},
		{[]string{"members", "--timeout", "-5s"}, "--command-timeout must be positive"},
		{[]string{"leader", "--attempt-timeout", "-1s"}, "--attempt-timeout must not be negative"},
		{[]string{"get", "k", "--dial-timeout", "soon"}, "dial-timeout"},
	} {
		code, stderr, _ := runCtl(t, bin, tc.args...)
		if code != exitUsage || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tc.args, code, stderr, exitUsage, tc.want)
		}
	}
	// The environment: KVSTORE_TIMEOUT counts when nothing else sets the
	// command timeout, and yields to --command-timeout.
	dead := freeAddr(t)
	for _, tc := range []struct {
		env  string
		args []string
		want int
	}{
		{"KVSTORE_TIMEOUT=-1s", []string{"get", "k", "--endpoints", dead}, exitUsage},
		{"KVSTORE_COMMAND_TIMEOUT=-1s", []string{"get", "k", "--endpoints", dead}, exitUsage},
		{"KVSTORE_DIAL_TIMEOUT=-1s", []string{"get", "k", "--endpoints", dead}, exitUsage},
		{"KVSTORE_TIMEOUT=-1s", []string{"get", "k", "--endpoints", dead, "--command-timeout", "5s"}, exitFailed},
		{"KVSTORE_COMMAND_TIMEOUT=-1s", []string{"get", "k", "--endpoints", dead, "--timeout", "5s"}, exitFailed},
	} {
		cmd := exec.Command(bin, tc.args...)
		cmd.Env = append(os.Environ(), tc.env)
		var errOut bytes.Buffer
		cmd.Stderr = &errOut
		code, err := processExit(cmd.Run())
		if err != nil {
			t.Fatal(err)
		}
		if code != tc.want {
			t.Errorf("%s %v: exit %d, stderr %q; want exit %d", tc.env, tc.args, code, errOut.String(), tc.want)
		}
	}
}
