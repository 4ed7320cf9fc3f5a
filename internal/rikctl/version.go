package rikctl

import (
	"context"
	"fmt"
	"net/http"

	"github.com/spf13/cobra"

	"github.com/rik-org/rik/api"
	"github.com/rik-org/rik/internal/version"
)

// ServerVersion is the controller's version, from /healthz ("" from a
// controller too old to say).
func (c *Client) ServerVersion(ctx context.Context) (string, error) {
	var h api.Health
	if err := c.do(ctx, http.MethodGet, "/healthz", nil, &h); err != nil {
		return "", err
	}
	return h.Version, nil
}

func newVersionCommand(a *app) *cobra.Command {
	var clientOnly bool
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print rikctl's version and the controller's",
		Example: "  rikctl version\n  rikctl version --client",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintf(a.env.Stdout, "Client Version: %s (%s)\n", version.Version, version.GoVersion())
			if clientOnly {
				return nil
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			v, err := c.ServerVersion(cmd.Context())
			if err != nil {
				return fmt.Errorf("server version: %w", err)
			}
			if v == "" {
				v = "unknown (a controller that does not say)"
			}
			fmt.Fprintf(a.env.Stdout, "Server Version: %s\n", clean(v))
			return nil
		},
	}
	cmd.Flags().BoolVar(&clientOnly, "client", false, "only rikctl's version: do not ask the controller")
	return cmd
}
