// Package version is the build's version, set by the Makefile.
package version

// Version is set with -ldflags "-X .../internal/version.Version=...".
var Version = "dev"
