package project

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/docker/go-units"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/vmcompose/vmcompose/schema"
)

// Extension is the name of the per-service VM extension.
const Extension = "x-vm"

// Defaults for a service that sets neither x-vm nor resource limits.
const (
	DefaultVCPUs  = 1
	DefaultMemory = 256 << 20 // bytes
	DefaultDisk   = 1 << 30   // bytes, allocated sparsely
	MinMemory     = 64 << 20
)

// VM is a service's resolved VM settings.
type VM struct {
	VCPUs      int      `json:"vcpus"`
	Memory     int64    `json:"memory"` // bytes
	Disk       int64    `json:"disk"`   // bytes of the writable layer
	Kernel     string   `json:"kernel,omitempty"`
	KernelArgs []string `json:"kernel_args,omitempty"`
	Backend    string   `json:"backend,omitempty"`
	// HostLoopback lets the service's guests reach the host's 127.0.0.1
	// through their gateways (network.Endpoint.HostLoopback).
	HostLoopback bool `json:"host_loopback,omitempty"`
	// TranslationCache is the bytes of TCG's translation cache (0: the
	// backend's default); a VM without KVM that runs much code, such as
	// the builder, retranslates less with a bigger one.
	TranslationCache int64 `json:"translation_cache,omitempty"`
}

// xvm is the extension as written in the compose file.
type xvm struct {
	VCPUs        *int            `json:"vcpus"`
	Memory       json.RawMessage `json:"memory"`
	Disk         json.RawMessage `json:"disk"`
	Kernel       string          `json:"kernel"`
	KernelArgs   json.RawMessage `json:"kernel_args"`
	Backend      string          `json:"backend"`
	HostLoopback bool            `json:"host_loopback"`
	// TranslationCache is a size, as memory is.
	TranslationCache json.RawMessage `json:"translation_cache"`
}

var compiled = sync.OnceValues(func() (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(schema.XVM))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("x-vm.schema.json", doc); err != nil {
		return nil, err
	}
	return c.Compile("x-vm.schema.json")
})

// VMOf validates the service's x-vm extension against the schema and
// resolves its settings, as Load does for Project.VMs: the size from x-vm
// first, then deploy.resources.limits, then the service's cpus and
// mem_limit, then the defaults.
func VMOf(svc types.ServiceConfig) (VM, error) {
	vm := VM{VCPUs: DefaultVCPUs, Memory: DefaultMemory, Disk: DefaultDisk}
	if lim := limitsOf(svc); lim != nil {
		if lim.NanoCPUs > 0 {
			vm.VCPUs = int(math.Ceil(float64(lim.NanoCPUs)))
		}
		if lim.MemoryBytes > 0 {
			vm.Memory = int64(lim.MemoryBytes)
		}
	}
	if svc.CPUS > 0 {
		vm.VCPUs = int(math.Ceil(float64(svc.CPUS)))
	}
	if svc.MemLimit > 0 {
		vm.Memory = int64(svc.MemLimit)
	}

	raw, ok := svc.Extensions[Extension]
	if ok {
		var x xvm
		if err := decodeExtension(raw, &x); err != nil {
			return VM{}, err
		}
		if x.VCPUs != nil {
			vm.VCPUs = *x.VCPUs
		}
		var err error
		if vm.Memory, err = size("memory", x.Memory, vm.Memory); err != nil {
			return VM{}, err
		}
		if vm.Disk, err = size("disk", x.Disk, vm.Disk); err != nil {
			return VM{}, err
		}
		if vm.TranslationCache, err = size("translation_cache", x.TranslationCache, 0); err != nil {
			return VM{}, err
		}
		vm.Kernel = x.Kernel
		vm.Backend = x.Backend
		vm.HostLoopback = x.HostLoopback
		if len(x.KernelArgs) > 0 {
			var one string
			if json.Unmarshal(x.KernelArgs, &one) == nil {
				vm.KernelArgs = strings.Fields(one)
			} else if err := json.Unmarshal(x.KernelArgs, &vm.KernelArgs); err != nil {
				return VM{}, fmt.Errorf("x-vm.kernel_args: %w", err)
			}
		}
	}
	if vm.Memory < MinMemory {
		return VM{}, fmt.Errorf("memory: %s is too little for a VM: give at least 64m in x-vm.memory or deploy.resources.limits.memory", units.BytesSize(float64(vm.Memory)))
	}
	return vm, nil
}

func limitsOf(svc types.ServiceConfig) *types.Resource {
	if svc.Deploy == nil {
		return nil
	}
	return svc.Deploy.Resources.Limits
}

// decodeExtension validates the extension against the schema and decodes it.
func decodeExtension(raw any, x *xvm) error {
	sch, err := compiled()
	if err != nil {
		return fmt.Errorf("compiling the x-vm schema: %w", err)
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return fmt.Errorf("x-vm: %w", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("x-vm: %w", err)
	}
	if err := sch.Validate(inst); err != nil {
		var verr *jsonschema.ValidationError
		if errors.As(err, &verr) {
			return schemaError(verr)
		}
		return fmt.Errorf("x-vm: %w", err)
	}
	return json.Unmarshal(b, x)
}

var printer = message.NewPrinter(language.English)

// schemaError turns the validator's tree into one line per leaf, each
// naming the field: "x-vm.vcpus: got string, want integer".
func schemaError(verr *jsonschema.ValidationError) error {
	var lines []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		field := strings.Join(append([]string{Extension}, e.InstanceLocation...), ".")
		lines = append(lines, field+": "+e.ErrorKind.LocalizedString(printer))
	}
	walk(verr)
	slices.Sort(lines)
	lines = slices.Compact(lines)
	return fmt.Errorf("%s (see schema/x-vm.schema.json for the fields allowed)", strings.Join(lines, "; "))
}

// size reads a size field: an integer of bytes or a string like "512m".
func size(field string, raw json.RawMessage, def int64) (int64, error) {
	if len(raw) == 0 {
		return def, nil
	}
	var n int64
	if err := json.Unmarshal(raw, &n); err == nil {
		return n, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, fmt.Errorf("x-vm.%s: %s is not a size: use bytes or a value such as \"512m\"", field, raw)
	}
	n, err := units.RAMInBytes(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("x-vm.%s: %q is not a size: use bytes or a value such as \"512m\" or \"2g\"", field, s)
	}
	return n, nil
}
