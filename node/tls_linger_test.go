package node

import (
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/kvstore/kvstore/certs"
	"github.com/kvstore/kvstore/internal/testpki"
)

// watchedConn reports on ended when the server begins to end the
// connection (CloseWrite or Close, whichever comes first).
type watchedConn struct {
	*net.TCPConn
	ended chan struct{}
	once  bool
}

func (c *watchedConn) end() {
	if !c.once {
		c.once = true
		close(c.ended)
	}
}

func (c *watchedConn) CloseWrite() error { err := c.TCPConn.CloseWrite(); c.end(); return err }
func (c *watchedConn) Close() error      { err := c.TCPConn.Close(); c.end(); return err }

// TestRefusedClientReadsTheAlert: when a node refuses a client's
// certificate, the client reads why ("unknown certificate authority"),
// even when it wrote the HTTP/2 preface before the node refused (TLS 1.3
// ends the client's handshake first) and writes again after. Closing with
// the preface unread would send a TCP reset: the client would see only
// "broken pipe" or "connection reset" (seen as a flaky
// TestNodeProcessesTLS on a loaded machine). With the node's credentials
// replaced by gRPC's plain TLS ones the test fails that way.
func TestRefusedClientReadsTheAlert(t *testing.T) {
	pki := testpki.New(t, "linger CA")
	serverCert, err := tls.LoadX509KeyPair(pki.ServerCert, pki.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	creds := lingeringCreds{credentials.NewTLS(certs.ServerConfig(serverCert, pki.CA.Pool()))}
	other := testpki.New(t, "another CA")
	clientCfg := testpki.ClientTLS(pki.CA.Pool(), &other.Client)
	clientCfg.ServerName = "127.0.0.1"
	clientCfg.MinVersion = tls.VersionTLS13

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for i := range 20 {
		ended := make(chan struct{})
		handshook := make(chan error, 1)
		go func() {
			raw, err := ln.Accept()
			if err != nil {
				handshook <- err
				return
			}
			_, _, err = creds.ServerHandshake(&watchedConn{TCPConn: raw.(*net.TCPConn), ended: ended})
			handshook <- err
		}()
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		conn := tls.Client(raw, clientCfg)
		conn.SetDeadline(time.Now().Add(30 * time.Second))
		if err := conn.Handshake(); err != nil {
			t.Fatalf("round %d: the client's side of a TLS 1.3 handshake ends before the server checks its certificate, yet: %v", i, err)
		}
		if _, err := conn.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err != nil {
			t.Fatalf("round %d: first write: %v", i, err)
		}
		select {
		case <-ended:
		case <-time.After(30 * time.Second):
			t.Fatalf("round %d: the server did not end the refused connection", i)
		}
		werr := error(nil)
		if _, werr = conn.Write(make([]byte, 9)); werr == nil {
			_, werr = conn.Read(make([]byte, 1))
		}
		conn.Close()
		if werr == nil || !strings.Contains(werr.Error(), "unknown certificate authority") {
			t.Fatalf("round %d: the client saw %v, not the node's alert", i, werr)
		}
		if herr := <-handshook; herr == nil || errors.Is(herr, net.ErrClosed) {
			t.Fatalf("round %d: server handshake: %v; want a refusal", i, herr)
		}
	}
}
