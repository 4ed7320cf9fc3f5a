package cgroups

import (
	"errors"
	"slices"
	"testing"
)

func TestDescribe(t *testing.T) {
	read := func(files map[string]string) func(string) ([]byte, error) {
		return func(p string) ([]byte, error) {
			if c, ok := files[p]; ok {
				return []byte(c), nil
			}
			return nil, errors.New("no " + p)
		}
	}
	for _, tc := range []struct {
		name      string
		mountinfo string
		files     map[string]string
		want      Summary
	}{
		{"unified", unified, map[string]string{"/sys/fs/cgroup/cgroup.controllers": "cpuset cpu io memory pids\n"},
			Summary{V2: true, Controllers: []string{"cpu", "cpuset", "io", "memory", "pids"}}},
		{"unified, unreadable", unified, nil, Summary{V2: true}},
		{"hybrid", hybrid, map[string]string{"/sys/fs/cgroup/unified/cgroup.controllers": "memory\n"},
			Summary{V1: true, V2: true, Controllers: []string{"cpu", "cpuacct", "memory", "pids", "xattr"}}},
		{"none", "garbage", nil, Summary{}},
	} {
		got := Describe(tc.mountinfo, read(tc.files))
		if got.V1 != tc.want.V1 || got.V2 != tc.want.V2 || !slices.Equal(got.Controllers, tc.want.Controllers) {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
