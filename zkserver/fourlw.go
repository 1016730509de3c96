package zkserver

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"
)

// maxFourLetterReply bounds the reply FourLetterWord reads.
const maxFourLetterReply = 1 << 20

// FourLetterWord sends ZooKeeper's four-letter-word command cmd (such as
// "ruok", "srvr" or "mntr") to the server at addr (host:port) and returns
// its reply, bounded by ctx. Servers started by this package allow every
// command.
func FourLetterWord(ctx context.Context, addr, cmd string) (string, error) {
	if len(cmd) != 4 {
		return "", fmt.Errorf("zkserver: four-letter word %q is not four bytes long", cmd)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("zkserver: %s %s: %w", cmd, addr, err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	// Unblock the exchange if ctx is canceled.
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	reply, err := func() ([]byte, error) {
		if _, err := io.WriteString(conn, cmd); err != nil {
			return nil, err
		}
		// The server answers and closes the connection.
		return io.ReadAll(io.LimitReader(conn, maxFourLetterReply))
	}()
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		return "", fmt.Errorf("zkserver: %s %s: %w", cmd, addr, err)
	}
	return string(reply), nil
}
