// Package api holds rik's wire descriptions: the gRPC protos (in proto/),
// the REST API's OpenAPI description and the workload JSON schema, embedded
// here so the controller can serve them.
package api

import _ "embed"

// OpenAPI is the controller's REST API description (api/openapi.yaml).
//
//go:embed openapi.yaml
var OpenAPI []byte

// WorkloadSchema is the JSON schema of a workload definition
// (api/workload.schema.json).
//
//go:embed workload.schema.json
var WorkloadSchema []byte
