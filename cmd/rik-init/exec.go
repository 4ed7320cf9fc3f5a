package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/rik-org/rik/internal/workload"
)

// execConfigPath holds, in the initramfs, the arguments and environment
// of the entrypoint (the riklet writes it: see execConfig in
// internal/riklet/runtime/function). Absent: there are none.
const execConfigPath = "/rik/exec.json"

// maxExecConfig bounds what is read of it.
const maxExecConfig = 4 << 20

type execConfig struct {
	Args []string          `json:"args"`
	Env  []workload.EnvVar `json:"env"`
}

// readExecConfig reads the entrypoint's config at path; a missing file is
// an empty config. Errors never quote the file (env values are secret).
func readExecConfig(path string) (execConfig, error) {
	var c execConfig
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxExecConfig+1))
	switch {
	case err != nil:
		return c, fmt.Errorf("reading %s: %w", path, err)
	case len(b) > maxExecConfig:
		return c, fmt.Errorf("reading %s: larger than %d bytes", path, maxExecConfig)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return execConfig{}, fmt.Errorf("decoding %s: invalid JSON", path)
	}
	return c, nil
}

// entrypointEnv is the entrypoint's environment: rik-init's defaults,
// each replaced by a variable of env with the same name, then env's others
// in order.
func entrypointEnv(env []workload.EnvVar) []string {
	return workload.OverlayEnv([]string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/", "TERM=linux"}, env)
}
