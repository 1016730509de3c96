// Package goroutines holds the goroutine accounting every coordinator
// backend (coord/etcdcoord, coord/zkcoord, coord/memcoord) does the same
// way: a Group counts the goroutines of a Coordinator and of its sessions,
// refuses new ones once the Coordinator is closing, and lets Close wait
// for every one, so that none outlives it.
package goroutines
