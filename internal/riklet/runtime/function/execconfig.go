package function

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/rik-org/rik/internal/riklet/initramfs"
	"github.com/rik-org/rik/internal/workload"
)

// execConfigPath is where rik-init finds the entrypoint's arguments and
// environment in its initramfs (cmd/rik-init reads the same path).
const execConfigPath = "rik/exec.json"

// execConfig is what rik-init passes to the entrypoint besides its path:
// the words of execution.entrypoint after the first, then
// execution.args; and execution.env. It travels in the initramfs, not on
// the kernel command line: no size limit nor quoting there, and env values
// are not shown in the VMM's command line.
type execConfig struct {
	Args []string          `json:"args,omitempty"`
	Env  []workload.EnvVar `json:"env,omitempty"`
}

// execConfigOf is the execConfig of fn; false when there is nothing to pass.
func execConfigOf(fn workload.Function) (execConfig, bool) {
	var c execConfig
	if words := strings.Fields(fn.Execution.Entrypoint); len(words) > 1 {
		c.Args = append(c.Args, words[1:]...)
	}
	c.Args = append(c.Args, fn.Execution.Args...)
	c.Env = fn.Execution.Env
	return c, len(c.Args) > 0 || len(c.Env) > 0
}

// initrdFor returns the initramfs an instance of fn boots with: the node's
// (shared) when there is nothing to pass to the entrypoint, else a copy in
// dir followed by a cpio archive holding rik/exec.json (the kernel unpacks
// concatenated archives in turn). The copy is readable by its owner only:
// uid when not 0 (an unprivileged VMM re-opens it through /proc/self/fd,
// which checks the file's permissions), root otherwise.
func initrdFor(shared, dir string, uid uint32, fn workload.Function) (string, error) {
	c, ok := execConfigOf(fn)
	if !ok {
		return shared, nil
	}
	b, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("encoding entrypoint config: %w", err)
	}
	path := filepath.Join(dir, "initrd.img")
	if err := appendedInitrd(path, shared, b); err != nil {
		return "", fmt.Errorf("writing initramfs %s: %w", path, err)
	}
	if uid != 0 {
		if err := os.Chown(path, int(uid), int(uid)); err != nil {
			return "", fmt.Errorf("giving initramfs %s to uid %d: %w", path, uid, err)
		}
	}
	return path, nil
}

// appendedInitrd writes path: shared, zeros up to a 4-byte boundary (where
// the kernel expects the next archive), then a cpio with execConfigPath.
func appendedInitrd(path, shared string, config []byte) error {
	src, err := os.Open(shared)
	if err != nil {
		return err
	}
	defer src.Close()
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o400)
	if err != nil {
		return err
	}
	n, err := io.Copy(out, src)
	if err == nil {
		_, err = out.Write(make([]byte, (4-n%4)%4))
	}
	if err == nil {
		c := initramfs.NewCPIOWriter(out)
		if err = c.File(execConfigPath, 0o400, config); err == nil {
			err = c.Close()
		}
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}
