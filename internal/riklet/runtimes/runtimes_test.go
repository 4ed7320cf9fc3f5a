package runtimes

import "testing"

func TestCheckCgroupParent(t *testing.T) {
	for p, ok := range map[string]bool{
		"":                 true,
		"rik/pods":         true,
		"/rik-e2e-1/pods/": true,
		"rik/../etc":       false,
		"rik//pods":        false,
		"rik pods":         false,
		"./rik":            false,
	} {
		if err := checkCgroupParent(p); (err == nil) != ok {
			t.Errorf("checkCgroupParent(%q) = %v, want ok=%v", p, err, ok)
		}
	}
}
