//go:build !nofaults

package node

// faultsOn is true in ordinary builds: Config.Faults can switch the
// deliberate protocol bugs on, for tests. A release binary is built with
// -tags nofaults (faults_off.go), and the compiler drops every check.
const faultsOn = true
