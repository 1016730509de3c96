package main

import (
	"fmt"

	"github.com/spf13/pflag"

	"github.com/kvstore/kvstore/durable"
	"github.com/kvstore/kvstore/node"
)

// limitFlags are a node's client API limits (node.Config.MaxKeySize and
// the fields after it).
type limitFlags struct {
	keySize, valueSize, requestSize, clientRequests int
}

// add defines the limit flags on fl, with node's defaults.
func (l *limitFlags) add(fl *pflag.FlagSet) {
	fl.IntVar(&l.keySize, "max-key-size", node.DefaultMaxKeySize, "longest key a client may read or write, in bytes")
	fl.IntVar(&l.valueSize, "max-value-size", node.DefaultMaxValueSize, "longest value a client may write, in bytes")
	fl.IntVar(&l.requestSize, "max-request-size", node.DefaultMaxRequestSize, "largest client request as encoded on the wire, in bytes")
	fl.IntVar(&l.clientRequests, "max-client-requests", node.DefaultMaxClientRequests, "client requests one client connection may have in flight at this node; more fail at once")
}

// apply copies the limits into cfg; node.Config.Validate checks them.
func (l *limitFlags) apply(cfg *node.Config) {
	cfg.MaxKeySize = l.keySize
	cfg.MaxValueSize = l.valueSize
	cfg.MaxRequestSize = l.requestSize
	cfg.MaxClientRequests = l.clientRequests
}

// validate names the first bad limit flag.
func (l *limitFlags) validate() error {
	switch {
	case l.keySize <= 0 || l.keySize > durable.MaxKeyLen:
		return fmt.Errorf("--max-key-size %d: must be in [1, %d]", l.keySize, durable.MaxKeyLen)
	case l.valueSize < 0:
		return fmt.Errorf("--max-value-size %d: must not be negative", l.valueSize)
	case l.requestSize <= l.keySize:
		return fmt.Errorf("--max-request-size %d: must exceed --max-key-size %d", l.requestSize, l.keySize)
	case l.clientRequests <= 0:
		return fmt.Errorf("--max-client-requests %d: must be positive", l.clientRequests)
	}
	return nil
}
