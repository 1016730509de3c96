// Package etcdembed starts an embedded etcd server on loopback for the shell,
// the tests and single-binary deployments.
package etcdembed

import _ "go.etcd.io/etcd/server/v3/embed"
