package controller

import "github.com/rik-org/rik/api"

func openAPIDoc() []byte        { return api.OpenAPI }
func workloadSchemaDoc() []byte { return api.WorkloadSchema }
