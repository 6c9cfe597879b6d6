// Package version holds the build's version, stamped at link time with
//
//	-ldflags "-X github.com/tokenproxy/tokenproxy/internal/version.Version=v1.2.3"
package version

import "runtime/debug"

// Version is the release version; "dev" for an unstamped build.
var Version = "dev"

// Commit is the VCS revision the binary was built from, when known.
var Commit = ""

// String returns "tokenproxy <version> (<commit>)" for the version command and logs.
func String() string {
	commit := Commit
	if commit == "" {
		if info, ok := debug.ReadBuildInfo(); ok {
			for _, s := range info.Settings {
				if s.Key == "vcs.revision" && len(s.Value) >= 12 {
					commit = s.Value[:12]
				}
			}
		}
	}
	if commit == "" {
		return "tokenproxy " + Version
	}
	return "tokenproxy " + Version + " (" + commit + ")"
}
