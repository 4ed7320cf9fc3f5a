package workload

import (
	"fmt"
	"slices"
	"strings"
)

// SecurityContext is how a container's process is confined, in the
// spelling of Kubernetes' container securityContext.
type SecurityContext struct {
	RunAsUser              *int64 `json:"runAsUser,omitempty"`
	RunAsGroup             *int64 `json:"runAsGroup,omitempty"`
	ReadOnlyRootFilesystem bool   `json:"readOnlyRootFilesystem,omitempty"`
	// Privileged gives the container every capability, no seccomp filter
	// and no masked /proc paths. A node runs it only when its riklet allows
	// privileged containers (--allow-privileged).
	Privileged   bool          `json:"privileged,omitempty"`
	Capabilities *Capabilities `json:"capabilities,omitempty"`
}

// Capabilities are added to or dropped from the default set (Docker's).
// Names are given with or without the CAP_ prefix, in any case; "ALL" may
// be dropped.
type Capabilities struct {
	Add  []string `json:"add,omitempty"`
	Drop []string `json:"drop,omitempty"`
}

// MaxID is the largest runAsUser and runAsGroup (as Kubernetes).
const MaxID = 1<<31 - 1

// AllCapabilities are the Linux capabilities (linux/capability.h), in
// their numeric order.
var AllCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
	"CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
	"CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK",
	"CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE",
	"CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE",
	"CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
	"CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

// DefaultCapabilities is the set a container gets (Docker's default).
var DefaultCapabilities = []string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
	"CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
}

// CapabilityName returns the canonical name (CAP_NET_ADMIN) of a
// capability as users write it (net_admin, NET_ADMIN, CAP_NET_ADMIN), or
// "ALL", and whether it is known.
func CapabilityName(s string) (string, bool) {
	u := strings.ToUpper(strings.TrimSpace(s))
	if u == "ALL" {
		return u, true
	}
	if !strings.HasPrefix(u, "CAP_") {
		u = "CAP_" + u
	}
	return u, slices.Contains(AllCapabilities, u)
}

// EffectiveCapabilities returns the container's capability set: the default set,
// less what is dropped ("ALL": everything), plus what is added; every
// capability when privileged. Names are canonical, in AllCapabilities'
// order. Unknown names are ignored (Validate reports them).
func (sc *SecurityContext) EffectiveCapabilities() []string {
	if sc != nil && sc.Privileged {
		return slices.Clone(AllCapabilities)
	}
	set := map[string]bool{}
	for _, c := range DefaultCapabilities {
		set[c] = true
	}
	if c := sc.caps(); c != nil {
		for _, d := range c.Drop {
			switch name, _ := CapabilityName(d); name {
			case "ALL":
				clear(set)
			default:
				delete(set, name)
			}
		}
		for _, a := range c.Add {
			if name, ok := CapabilityName(a); ok && name != "ALL" {
				set[name] = true
			}
		}
	}
	var out []string
	for _, c := range AllCapabilities {
		if set[c] {
			out = append(out, c)
		}
	}
	return out
}

func (sc *SecurityContext) caps() *Capabilities {
	if sc == nil {
		return nil
	}
	return sc.Capabilities
}

// NeedsPrivilege reports the first field of c asking for more than a node
// gives by default (privileged, or a capability outside the default set),
// as a field path under spec.containers[index], or "" when none does.
func (c Container) NeedsPrivilege(index int) string {
	sc := c.SecurityContext
	if sc == nil {
		return ""
	}
	p := fmt.Sprintf("spec.containers[%d].securityContext", index)
	if sc.Privileged {
		return p + ".privileged"
	}
	if sc.Capabilities != nil {
		for i, a := range sc.Capabilities.Add {
			if name, _ := CapabilityName(a); !slices.Contains(DefaultCapabilities, name) {
				return fmt.Sprintf("%s.capabilities.add[%d]", p, i)
			}
		}
	}
	return ""
}

// securityContext validates a container's securityContext at path.
func (v *validator) securityContext(path string, sc *SecurityContext) {
	if sc == nil {
		return
	}
	for _, id := range []struct {
		name string
		val  *int64
	}{{"runAsUser", sc.RunAsUser}, {"runAsGroup", sc.RunAsGroup}} {
		if id.val != nil && (*id.val < 0 || *id.val > MaxID) {
			v.add(path+"."+id.name, "must be between 0 and %d", MaxID)
		}
	}
	if sc.Capabilities == nil {
		return
	}
	for _, list := range []struct {
		name     string
		caps     []string
		allowAll bool
	}{{"add", sc.Capabilities.Add, false}, {"drop", sc.Capabilities.Drop, true}} {
		if len(list.caps) > len(AllCapabilities)+1 {
			v.add(path+".capabilities."+list.name, "at most %d capabilities", len(AllCapabilities)+1)
			continue
		}
		for i, c := range list.caps {
			p := fmt.Sprintf("%s.capabilities.%s[%d]", path, list.name, i)
			name, ok := CapabilityName(c)
			switch {
			case !ok:
				v.add(p, "unknown capability %q", truncate(c))
			case name == "ALL" && !list.allowAll:
				v.add(p, "ALL may only be dropped (use privileged for every capability)")
			}
		}
	}
}
