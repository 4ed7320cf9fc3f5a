package rikctl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/rik-org/rik/api"
)

// TokenItem is an API token as tokens.list shows it (never its secret).
type TokenItem = api.Item[api.Token]

// CreateToken creates an API token (admin only).
func (c *Client) CreateToken(ctx context.Context, req api.CreateTokenRequest) (api.CreatedToken, error) {
	var out api.CreatedToken
	return out, c.do(ctx, http.MethodPost, "tokens.create", req, &out)
}

// ListTokens lists the API tokens (admin only).
func (c *Client) ListTokens(ctx context.Context) ([]TokenItem, error) {
	var out []TokenItem
	return out, c.do(ctx, http.MethodGet, "tokens.list", nil, &out)
}

// DeleteToken deletes an API token by id (admin only).
func (c *Client) DeleteToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "tokens.delete", api.IDRequest{ID: id}, nil)
}

func newTokenCommand(a *app) *cobra.Command {
	tok := &cobra.Command{Use: "token", Short: "Manage API tokens (admin role)", Args: resourceArgs("create, list or delete"), RunE: needResource}

	var req api.CreateTokenRequest
	var format string
	create := &cobra.Command{
		Use:   "create --role admin|operator|viewer [--ttl 24h] [--description TEXT]",
		Short: "Create a token; prints it (shown only this once)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !slices.Contains([]string{"admin", "operator", "viewer"}, req.Role) {
				return errors.New("--role: must be admin, operator or viewer")
			}
			if req.TTL != "" {
				if d, err := time.ParseDuration(req.TTL); err != nil || d < 0 {
					return fmt.Errorf("--ttl %q: want a duration such as 24h or 90m", req.TTL)
				}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			out, err := c.CreateToken(cmd.Context(), req)
			if err != nil {
				return err
			}
			if format == FormatJSON || format == FormatYAML {
				return writeData(a.env.Stdout, format, out)
			}
			fmt.Fprintln(a.env.Stdout, clean(out.Token))
			return nil
		},
	}
	create.Flags().StringVar(&req.Role, "role", "", "admin (everything), operator (workloads and instances) or viewer (read only, secrets hidden)")
	create.Flags().StringVar(&req.TTL, "ttl", "", "lifetime, e.g. 24h (default: no expiry)")
	create.Flags().StringVar(&req.Description, "description", "", "what the token is for")
	create.Flags().StringVarP(&format, "output", "o", "", "json or yaml: the whole answer (default: the token alone)")
	_ = create.MarkFlagRequired("role")

	var listFormat string
	list := &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List tokens (their secrets are never shown)",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkFormat(listFormat); err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			items, err := c.ListTokens(cmd.Context())
			if err != nil {
				return err
			}
			if isData(listFormat) {
				return writeOutput(a.env.Stdout, listFormat, "token", nonNil(items))
			}
			if len(items) == 0 {
				return noResources(a.env.Stderr)
			}
			return tokenTable(a.env.Stdout, a.env.Now(), items)
		},
	}
	list.Flags().StringVarP(&listFormat, "output", "o", FormatTable, "output format: table, json, yaml, name, jsonpath=TEMPLATE or go-template=TEMPLATE")

	del := &cobra.Command{
		Use:   "delete ID...",
		Short: "Delete tokens: they stop working at once on this controller, within 5 s on the others",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return deleteEach(cmd.Context(), a, "token", args, (*Client).DeleteToken)
		},
	}
	tok.AddCommand(create, list, del)
	return tok
}

func tokenTable(w io.Writer, now time.Time, items []TokenItem) error {
	rows := make([][]string, 0, len(items))
	for _, it := range items {
		v := it.Value
		expires := "never"
		if v.ExpiresAt != nil {
			if v.Expired {
				expires = "expired"
			} else {
				expires = "in " + age(*v.ExpiresAt, now)
			}
		}
		rows = append(rows, []string{it.ID, v.Role, age(now, v.CreatedAt), expires, strings.TrimSpace(v.Description)})
	}
	return writeTable(w, []string{"ID", "ROLE", "AGE", "EXPIRES", "DESCRIPTION"}, rows)
}
