// Package version is the build's version, the one version source of every
// rik binary: the Makefile sets Version with -ldflags.
package version

import (
	"fmt"
	"runtime"
)

// Version is set with -ldflags "-X github.com/rik-org/rik/internal/version.Version=...";
// "dev" in a build without it.
var Version = "dev"

// GoVersion is the Go release the binary was built with.
func GoVersion() string { return runtime.Version() }

// String is the line a binary prints for --version, e.g.
// "controller version v0.3.0 (go1.26.8 linux/amd64)".
func String(name string) string {
	return fmt.Sprintf("%s version %s (%s %s/%s)", name, Version, GoVersion(), runtime.GOOS, runtime.GOARCH)
}
