package planner

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/compose-spec/compose-go/v2/types"
)

// Fields maps the name of every field of a service's canonical form (the
// compose field name, e.g. "environment", "x-vm", "image_digest") to a
// hash of its value. Comparing two Fields names what changed.
type Fields map[string]string

// Hash is the service's config hash: one digest over all of its Fields.
func (f Fields) Hash() string {
	keys := make([]string, 0, len(f))
	for k := range f {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	h := sha256.New()
	for _, k := range keys {
		fmt.Fprintf(h, "%s=%s\n", k, f[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Changed returns the names of the fields that differ between old and f, in
// name order.
func (f Fields) Changed(old Fields) []string {
	var out []string
	for k, v := range f {
		if old[k] != v {
			out = append(out, k)
		}
	}
	for k := range old {
		if _, ok := f[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// ServiceFields computes the canonical form of everything in a service that
// needs a new VM when it changes, field by field. Left out, as docker
// compose leaves them out of its hash: depends_on, replicas and scale,
// build, pull_policy and profiles. Also left out because a VM does not
// depend on them: labels and annotations (metadata only), restart (a
// supervisor policy), develop (watch rules), and x- extensions other than
// x-vm. digest, when not empty, is the image digest the reference
// resolved to.
func ServiceFields(svc types.ServiceConfig, digest string) (Fields, error) {
	svc.DependsOn = nil
	svc.Scale = nil
	svc.Build = nil
	svc.PullPolicy = ""
	svc.Profiles = nil
	svc.Labels = nil
	svc.Annotations = nil
	svc.Restart = ""
	svc.Develop = nil
	if svc.Deploy != nil {
		d := *svc.Deploy
		d.Replicas = nil
		d.Labels = nil
		d.RestartPolicy = nil
		svc.Deploy = &d
		if isZeroDeploy(d) {
			svc.Deploy = nil
		}
	}
	b, err := json.Marshal(svc)
	if err != nil {
		return nil, fmt.Errorf("hashing service %q: %w", svc.Name, err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("hashing service %q: %w", svc.Name, err)
	}
	f := make(Fields, len(raw)+2)
	for k, v := range raw {
		f[k] = digestOf(v)
	}
	if x, ok := svc.Extensions["x-vm"]; ok {
		b, err := json.Marshal(x)
		if err != nil {
			return nil, fmt.Errorf("hashing service %q: x-vm: %w", svc.Name, err)
		}
		f["x-vm"] = digestOf(b)
	}
	if digest != "" {
		f["image_digest"] = digestOf([]byte(digest))
	}
	return f, nil
}

// ContentKey names a top-level secret's or config's entry in
// Desired.Contents and its field in Fields: field is "secrets" or
// "configs", e.g. "secrets:db_password".
func ContentKey(field, name string) string { return field + ":" + name }

// InstanceFields are the fields an instance of svc is recorded with and
// compared by: ServiceFields with the image digest, a field per secret and
// config by the keyed digest of its content (withContents), and one per
// named volume of it that is a shared directory (addShared). Up and the
// supervisor that creates the instance both call it, so they agree.
func InstanceFields(svc types.ServiceConfig, digest string, contents map[string]string, shared []string) (Fields, error) {
	f, err := ServiceFields(svc, digest)
	if err != nil {
		return nil, err
	}
	f.withContents(svc, contents)
	f.addShared(shared)
	return f, nil
}

// withContents adds to f a field per secret and config that svc uses:
// the digest of its content in digests (by ContentKey), so that changing
// a secret's content recreates the service and the plan names it. The
// digests are keyed (see Desired.Contents); a ref without one adds
// nothing.
func (f Fields) withContents(svc types.ServiceConfig, digests map[string]string) {
	add := func(field, name string) {
		k := ContentKey(field, name)
		if d, ok := digests[k]; ok {
			f[k] = d
		}
	}
	for _, ref := range svc.Secrets {
		add("secrets", ref.Source)
	}
	for _, ref := range svc.Configs {
		add("configs", ref.Source)
	}
}

// changedReason says what changed in a recreate's reason: the fields by
// name, then the secrets and configs whose content changed, by name
// (`changed: environment; secrets: "db_password" changed`), never a
// value, then the named volumes that become shared (in now, the new
// fields: `volumes: "uploads" becomes shared`).
func changedReason(changed []string, now Fields) string {
	var fields, became []string
	contents := map[string][]string{}
	for _, c := range changed {
		kind, name, ok := strings.Cut(c, ":")
		_, shared := now[c]
		switch {
		case ok && (kind == "secrets" || kind == "configs"):
			contents[kind] = append(contents[kind], strconv.Quote(name))
		case ok && kind+":" == sharedField && shared:
			became = append(became, strconv.Quote(name))
		default:
			fields = append(fields, c)
		}
	}
	var parts []string
	if len(fields) > 0 {
		parts = append(parts, "changed: "+strings.Join(fields, ", "))
	}
	for _, kind := range []string{"configs", "secrets"} {
		if names := contents[kind]; len(names) > 0 {
			parts = append(parts, kind+": "+strings.Join(names, ", ")+" changed")
		}
	}
	if len(became) > 0 {
		parts = append(parts, fmt.Sprintf("volumes: %s %s shared", strings.Join(became, ", "), map[bool]string{true: "becomes", false: "become"}[len(became) == 1]))
	}
	return strings.Join(parts, "; ")
}

// isZeroDeploy reports whether nothing is left of a deploy section, so that
// a file that only had replicas hashes as one that had no deploy at all.
func isZeroDeploy(d types.DeployConfig) bool {
	b, err := json.Marshal(d)
	zero, _ := json.Marshal(types.DeployConfig{})
	return err == nil && string(b) == string(zero)
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:12])
}
