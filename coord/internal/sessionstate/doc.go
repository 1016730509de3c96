// Package sessionstate holds what the coordinator backends' sessions
// (coord/etcdcoord, coord/zkcoord, coord/memcoord) keep and do the same
// way, whatever the coordinator underneath: the session's state (its
// deadline, health, end and the Changed signal, State) and the machinery
// of a campaign (one run at a time, the hand-over of its result to the
// caller, the leadership won, and Resign). Each backend keeps what is its own: how a keep-alive moves the
// deadline, how a candidacy enters and waits in the election, and how it is
// given back.
//
// A backend's session embeds a State, which provides the coord.Session
// methods Deadline, Changed, Done, Err and Healthy. State's mutex also
// guards the backend's own session fields; the methods named ...Locked must
// be called with it held (Lock, Unlock), every other method without.
package sessionstate
