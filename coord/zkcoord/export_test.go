package zkcoord

import "github.com/kvstore/kvstore/coord"

// SessionServer is the server a session of this package is connected to.
func SessionServer(s coord.Session) string { return s.(*session).l.conn.Server() }
