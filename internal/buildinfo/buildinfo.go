// Package buildinfo says which build of KVStore is running: the release
// version (set at link time), the VCS commit and the Go version (both read
// from the binary's build information).
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Version is the release version, set at link time:
//
//	go build -ldflags "-X github.com/kvstore/kvstore/internal/buildinfo.Version=v1.2.3" ./cmd/kvstore
//
// A build without it is "devel".
var Version = "devel"

// Commit is the VCS revision when the build information has none (a build
// with -buildvcs=false, or from a git worktree, whose .git is a file the Go
// tool does not stamp from); set it at link time like Version:
//
//	-ldflags "-X github.com/kvstore/kvstore/internal/buildinfo.Commit=$(git rev-parse HEAD)"
var Commit = ""

// Info describes a build.
type Info struct {
	Version   string // Version, "devel" unless set at link time
	Commit    string // VCS revision, "+dirty" if modified; else Commit; else "unknown"
	GoVersion string // the Go toolchain that built the binary
}

// Get returns this binary's build information.
func Get() Info {
	info := Info{Version: Version, Commit: "unknown", GoVersion: runtime.Version()}
	if Commit != "" {
		info.Commit = Commit
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return info
	}
	if bi.GoVersion != "" {
		info.GoVersion = bi.GoVersion
	}
	var rev string
	var dirty bool
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev != "" {
		info.Commit = rev
		if dirty {
			info.Commit += "+dirty"
		}
	}
	return info
}

// String renders the build on one line, as `kvstore version` prints it.
func (i Info) String() string {
	return fmt.Sprintf("kvstore %s (commit %s, %s)", i.Version, i.Commit, i.GoVersion)
}
