//go:build nofaults

package node

// faultsOn is false in a build with -tags nofaults (release binaries):
// every check of Config.Faults is written `faultsOn && ...`, so the
// compiler drops them from the hot path, and Config.Validate refuses a
// Config whose Faults are set.
const faultsOn = false
