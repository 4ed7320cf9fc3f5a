package pod

import "github.com/rik-org/rik/internal/riklet/podnet"

func podnetVeth(id string) string { return podnet.VethName(id) }
