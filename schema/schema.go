package schema

import _ "embed"

// XVM is the JSON schema (draft 2020-12) of the x-vm service extension.
//
//go:embed x-vm.schema.json
var XVM []byte
