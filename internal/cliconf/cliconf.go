// Package cliconf is the one command-line style of rik's daemons
// (controller, scheduler, riklet, rik dev): cobra commands whose every
// flag can also be set by an environment variable and by a YAML file,
// with one precedence, flag > environment > file > default.
//
//   - The environment variable of --some-flag is RIK_SOME_FLAG; a
//     component may add older names (RIK's PORT, DATABASE_LOCATION...),
//     read after it.
//   - The file is /etc/rik/<component>.yaml, or the one --config names: a
//     map of flag names to values, e.g. `listen: 127.0.0.1:5000`. A list
//     (or a map, given as key=value) sets a repeatable flag once per item.
//     A missing default file is no error; a missing --config file, or an
//     unknown setting, is.
//   - Old flag names stay accepted, hidden, through Options.FlagAliases.
//
// --help and --version never start anything: cobra answers them before
// the command runs.
package cliconf

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/rik-org/rik/internal/version"
)

// Options describe a component's settings.
type Options struct {
	// Component names the file (/etc/rik/<Component>.yaml) and the
	// version line.
	Component string
	// EnvAliases are older environment variables of a flag, by flag
	// name, read after RIK_<FLAG>.
	EnvAliases map[string][]string
	// FlagAliases are older flag names, accepted but hidden: old name ->
	// flag name.
	FlagAliases map[string]string
	// Getenv reads the environment; nil: os.Getenv.
	Getenv func(string) string
}

// DefaultDir is where the components' files are.
const DefaultDir = "/etc/rik"

// maxFileBytes bounds a configuration file.
const maxFileBytes = 1 << 20

// Setup gives cmd rik's style: --version (from internal/version),
// --config, the old flag names, and before the command runs, the flags not
// given on the command line set from the environment and the file.
// Flags must be defined before Execute; Setup may be called before or
// after they are.
func Setup(cmd *cobra.Command, o Options) {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	cmd.Version = version.Version
	cmd.SetVersionTemplate(version.String(o.Component) + "\n")
	cmd.SilenceUsage = true
	cmd.SilenceErrors = true // the main prints the error, once
	def := DefaultDir + "/" + o.Component + ".yaml"
	cmd.Flags().String("config", "", "settings file, YAML flag: value (env RIK_CONFIG; default "+def+" if it exists)")
	if len(o.FlagAliases) > 0 {
		cmd.Flags().SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
			if to, ok := o.FlagAliases[name]; ok {
				return pflag.NormalizedName(to)
			}
			return pflag.NormalizedName(name)
		})
	}
	prev := cmd.PreRunE
	cmd.PreRunE = func(c *cobra.Command, args []string) error {
		if err := Apply(c.Flags(), o); err != nil {
			return err
		}
		if prev != nil {
			return prev(c, args)
		}
		return nil
	}
}

// Apply sets each flag of fs not given on the command line from its
// environment variable, else from the configuration file.
func Apply(fs *pflag.FlagSet, o Options) error {
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	path, explicit := "", false
	if f := fs.Lookup("config"); f != nil && f.Changed {
		path, explicit = f.Value.String(), true
	} else if v := o.Getenv("RIK_CONFIG"); v != "" {
		path, explicit = v, true
	} else if o.Component != "" {
		path = DefaultDir + "/" + o.Component + ".yaml"
	}
	file, err := readFile(path, explicit)
	if err != nil {
		return err
	}
	for name := range file {
		if f := fs.Lookup(name); f == nil || notSetting[f.Name] {
			return fmt.Errorf("config %s: %s: unknown setting", path, name)
		}
	}
	var errs []error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || notSetting[f.Name] {
			return
		}
		if name, v, ok := fromEnv(o, f.Name); ok {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", name, v, err))
			}
			f.Changed = true
			return
		}
		if raw, ok := lookupFile(fs, file, f.Name); ok {
			if err := setFromFile(f, raw); err != nil {
				errs = append(errs, fmt.Errorf("config %s: %s: %w", path, f.Name, err))
			}
			f.Changed = true
		}
	})
	return errors.Join(errs...)
}

// notSetting are the flags that are no settings: neither the environment
// nor the file sets them (RIK_VERSION may well be set for other reasons).
var notSetting = map[string]bool{"config": true, "help": true, "version": true}

// EnvName is the environment variable of a flag: RIK_ and the name in
// upper case with '_' for '-'.
func EnvName(flag string) string {
	return "RIK_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// fromEnv returns the first set variable of flag: RIK_<FLAG>, then its
// aliases.
func fromEnv(o Options, flag string) (name, value string, ok bool) {
	for _, n := range append([]string{EnvName(flag)}, o.EnvAliases[flag]...) {
		if v := o.Getenv(n); v != "" {
			return n, v, true
		}
	}
	return "", "", false
}

// readFile reads the settings file; a missing file that was not asked for
// is empty.
func readFile(path string, explicit bool) (map[string]any, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	if len(b) > maxFileBytes {
		return nil, fmt.Errorf("config %s: larger than 1 MiB", path)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return m, nil
}

// lookupFile finds the file's value of a flag, under its name or an old
// one (fs normalizes both).
func lookupFile(fs *pflag.FlagSet, file map[string]any, name string) (any, bool) {
	keys := make([]string, 0, len(file))
	for k := range file {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if f := fs.Lookup(k); f != nil && f.Name == name {
			return file[k], true
		}
	}
	return nil, false
}

// setFromFile sets f from a YAML value: a scalar once, a list once per
// item, a map once per key=value (sorted by key).
func setFromFile(f *pflag.Flag, raw any) error {
	var vals []string
	switch v := raw.(type) {
	case []any:
		for i, item := range v {
			s, err := scalar(item)
			if err != nil {
				return fmt.Errorf("[%d]: %w", i, err)
			}
			vals = append(vals, s)
		}
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			s, err := scalar(v[k])
			if err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
			vals = append(vals, k+"="+s)
		}
	default:
		s, err := scalar(raw)
		if err != nil {
			return err
		}
		vals = []string{s}
	}
	for _, s := range vals {
		if err := f.Value.Set(s); err != nil {
			return err
		}
	}
	return nil
}

// scalar is a YAML scalar as a flag would be given it.
func scalar(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		return strconv.FormatBool(v), nil
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), nil
	case nil:
		return "", nil
	}
	return "", fmt.Errorf("want a string, number or boolean, not %T", v)
}

// AddGoFlags defines flags on cmd with the standard library's flag API
// (the riklet's runtime flags, and flag.Values without a pflag Type).
func AddGoFlags(cmd *cobra.Command, define func(*flag.FlagSet)) {
	gfs := flag.NewFlagSet(cmd.Name(), flag.ContinueOnError)
	define(gfs)
	cmd.Flags().AddGoFlagSet(gfs)
}
