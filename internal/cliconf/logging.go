package cliconf

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/spf13/pflag"
)

// Logging is the --log-level and --log-format of every component.
type Logging struct {
	Level  string
	Format string
}

// AddFlags defines --log-level and --log-format on fs.
func (l *Logging) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&l.Level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&l.Format, "log-format", "text", "log format: text or json")
}

// Logger is the logger the flags ask for, writing to w.
func (l Logging) Logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.Level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", l.Level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch l.Format {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", l.Format)
}
