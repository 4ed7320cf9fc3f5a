package workload

import "strings"

// OverlayEnv returns base (NAME=value strings) with env laid over it: a
// variable of env replaces the one of base with its name, in place; the
// others follow in order (a later duplicate wins).
func OverlayEnv(base []string, env []EnvVar) []string {
	out := append([]string(nil), base...)
	index := map[string]int{}
	for i, kv := range out {
		k, _, _ := strings.Cut(kv, "=")
		index[k] = i
	}
	for _, e := range env {
		kv := e.Name + "=" + e.Value
		if i, ok := index[e.Name]; ok {
			out[i] = kv
			continue
		}
		index[e.Name] = len(out)
		out = append(out, kv)
	}
	return out
}
