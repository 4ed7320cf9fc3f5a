package chaos

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/rik-org/rik/internal/workload"
)

// monitor checks the invariants every second until the run stops.
func (r *Run) monitor() {
	for {
		select {
		case <-r.stop:
			return
		case <-time.After(time.Second):
		}
		r.Poll()
	}
}

// Poll reads the API, then every node, and checks what must always hold.
func (r *Run) Poll() {
	items, err := r.C.Instances()
	if err != nil {
		return // the controller is down: nothing to compare
	}
	states := map[string]NodeState{}
	for _, n := range r.C.Nodes {
		if s, err := Observe(n); err == nil {
			states[n.Name] = s
		}
	}
	nodes, nerr := r.C.NodesList()
	r.check(items, states)
	if nerr == nil {
		r.checkNodes(nodes)
	}
}

// violate records a violation of inv about key, once per key.
func (r *Run) violate(inv, key, msg string) {
	r.mu.Lock()
	if r.violated == nil {
		r.violated = map[string]bool{}
	}
	dup := r.violated[inv+"\x00"+key]
	r.violated[inv+"\x00"+key] = true
	r.mu.Unlock()
	if dup {
		return
	}
	r.cnt.violation(inv)
	r.Fail(inv + ": " + msg)
}

func (r *Run) check(items []Item, states map[string]NodeState) {
	byName := map[string]Item{}
	for _, it := range items {
		byName[it.Name] = it
	}
	r.mu.Lock()
	for name, it := range byName {
		if old, ok := r.last[name]; !ok || old.Value.Status != it.Value.Status || old.Value.Node != it.Value.Node || old.Value.Reason != it.Value.Reason {
			r.tl.Add("  %s %s on %q reason %q %s", name, it.Value.Status, it.Value.Node, it.Value.Reason, it.Value.Message)
		}
	}
	for name := range r.last {
		if _, ok := byName[name]; !ok {
			r.tl.Add("  %s no longer listed", name)
		}
	}
	r.last = byName
	var retry []*tracked
	var checks []func()
	wanted := 0
	for _, tr := range r.tracked {
		it, listed := byName[tr.name]
		if listed {
			tr.seen, tr.id = true, it.ID
		}
		if tr.seen && !tr.deleted {
			wanted++
		}
		switch {
		case tr.deleted && !tr.deleteDone && tr.id != "":
			retry = append(retry, tr)
		case !tr.seen:
		case !tr.deleted && !listed:
			checks = append(checks, func() {
				r.violate(InvWantedLives, tr.name, fmt.Sprintf("%s (%s) vanished from the API", tr.name, tr.id))
			})
		case !tr.deleted && terminal(it.Value.Status):
			checks = append(checks, func() {
				r.violate(InvWantedLives, tr.name, fmt.Sprintf("%s (%s) is %s on %q: %s %s", tr.name, tr.id, it.Value.Status, it.Value.Node, it.Value.Reason, it.Value.Message))
			})
		case tr.deleted && !listed && !tr.verified:
			if tr.gone.IsZero() {
				tr.gone = time.Now()
			}
			checks = append(checks, func() { r.checkStopped(tr, states) })
		}
	}
	r.mu.Unlock()
	r.cnt.check(InvWantedLives, wanted)
	for _, f := range checks {
		f()
	}
	for _, tr := range retry {
		r.sendDelete(tr)
	}
	r.checkAddresses(items, states)
	for _, it := range items {
		if terminal(it.Value.Status) {
			r.cnt.check(InvReasons, 1)
			if it.Value.Reason == "" {
				r.violate(InvReasons, it.Name, fmt.Sprintf("%s is %s without a reason (%s)", it.Name, it.Value.Status, it.Value.Message))
			}
		}
	}
}

// checkStopped: instance tr is gone from the API: no node may run it.
func (r *Run) checkStopped(tr *tracked, states map[string]NodeState) {
	r.cnt.check(InvGoneAfterStop, 1)
	for node, s := range states {
		if s.Containers[tr.id] {
			r.violate(InvGoneAfterStop, tr.id, fmt.Sprintf("%s (%s) no longer listed, but its container runs on %s", tr.name, tr.id, node))
		}
	}
	r.mu.Lock()
	if time.Since(tr.gone) > 10*time.Second {
		tr.verified = true
	}
	r.mu.Unlock()
}

// checkAddresses: no two running instances, nor two leases of a node,
// share an address. A record the API has not updated yet (a pod moved or
// restarted whose new status is on its way) keeps its old address for a
// moment: only pods whose container runs on their node are compared.
func (r *Run) checkAddresses(items []Item, states map[string]NodeState) {
	r.cnt.check(InvUniqueAddr, 1)
	ips := map[string]string{}
	for _, it := range items {
		v := it.Value
		if v.IP == "" || v.Status != workload.StatusRunning {
			continue
		}
		if s, ok := states[v.Node]; ok && v.Kind != workload.KindFunction && !s.Containers[it.ID] {
			continue
		}
		if other, dup := ips[v.IP]; dup {
			r.violate(InvUniqueAddr, v.IP, fmt.Sprintf("%s and %s both have address %s", other, it.Name, v.IP))
		}
		ips[v.IP] = it.Name
	}
	for node, s := range states {
		seen := map[string]string{}
		for id, ip := range s.LeaseIPs {
			if other, dup := seen[ip]; dup {
				r.violate(InvUniqueAddr, node+ip, fmt.Sprintf("%s leases %s to %s and %s", node, ip, other, id))
			}
			seen[ip] = id
		}
	}
}

// checkNodes: with no partition nor riklet down, every node stays Ready
// (only checked when the run says nodes must stay up).
func (r *Run) checkNodes(nodes []NodeItem) {
	if !r.NodesStayReady {
		return
	}
	r.cnt.check(InvNodeReady, 1)
	for _, n := range nodes {
		if n.Value.Status != "Ready" {
			r.violate(InvNodeReady, n.Name, fmt.Sprintf("live node %s is %s", n.Name, n.Value.Status))
		}
	}
}

// ---- the end

// Heal ends every fault: nodes back on the network, every component running.
func (r *Run) Heal() {
	for _, n := range r.C.Nodes {
		if err := r.C.SetLinkUp(n, true); err != nil {
			r.Fail(fmt.Sprintf("bringing %s back: %v", n.Name, err))
		}
	}
	for _, p := range r.C.procs {
		if !p.Running() {
			r.restart(p)
		}
	}
	r.tl.Add("healed: every component running, every node connected")
}

// Settle waits until every wanted instance is RUNNING and every deleted one
// gone, then checks that they serve and that each node matches the API.
func (r *Run) Settle(timeout time.Duration) {
	r.C.WaitReady(2 * time.Minute)
	stuck := r.waitSettled(timeout)
	r.cnt.check(InvSettles, 1)
	for _, s := range stuck {
		r.violate(InvSettles, s, s)
	}
	r.Poll()
	items, err := r.C.Instances()
	if err != nil {
		r.Fail(fmt.Sprintf("listing instances: %v", err))
		return
	}
	r.checkServe(items)
	r.checkNodesMatch(items, 60*time.Second)
}

// waitSettled waits for the settled state and returns what is stuck.
func (r *Run) waitSettled(timeout time.Duration) []string {
	deadline := time.Now().Add(timeout)
	for {
		stuck, err := r.unsettled()
		if err == nil && len(stuck) == 0 {
			r.tl.Add("settled")
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				stuck = append(stuck, err.Error())
			}
			return stuck
		}
		r.Poll()
		time.Sleep(time.Second)
	}
}

func (r *Run) unsettled() ([]string, error) {
	items, err := r.C.Instances()
	if err != nil {
		return nil, err
	}
	byName := map[string]Item{}
	for _, it := range items {
		byName[it.Name] = it
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var stuck []string
	for _, it := range items {
		tr := r.tracked[it.Name]
		switch {
		case tr == nil:
			stuck = append(stuck, fmt.Sprintf("%s: not created by the run", it.Name))
		case tr.deleted:
			stuck = append(stuck, fmt.Sprintf("%s deleted but still listed: %s on %q (%s %s)", it.Name, it.Value.Status, it.Value.Node, it.Value.Reason, it.Value.Message))
		case it.Value.Status != workload.StatusRunning:
			stuck = append(stuck, fmt.Sprintf("%s is %s on %q (%s %s)", it.Name, it.Value.Status, it.Value.Node, it.Value.Reason, it.Value.Message))
		}
	}
	sort.Strings(stuck)
	return stuck, nil
}

// checkServe: every RUNNING instance answers at its IP from its node, and
// at its host port from the control namespace.
func (r *Run) checkServe(items []Item) {
	for _, it := range items {
		n := r.node(it.Value.Node)
		if it.Value.Status != workload.StatusRunning || n == nil {
			continue
		}
		urls := map[string]func() error{}
		if it.Value.IP != "" {
			u := "http://" + it.Value.IP + ":80/"
			urls[u] = func() error { _, err := Get(n.NS, u); return err }
		}
		for _, p := range it.Value.Ports {
			u := fmt.Sprintf("http://%s:%d/", n.IP, p.Port)
			urls[u] = func() error { _, err := Get(r.C.ctl, u); return err }
		}
		for u, get := range urls {
			r.cnt.check(InvServes, 1)
			if err := eventually(30*time.Second, get); err != nil {
				r.violate(InvServes, u, fmt.Sprintf("%s on %s: %s: %v", it.Name, n.Name, u, err))
			}
		}
	}
}

// checkNodesMatch: each node holds exactly what the API says it runs.
func (r *Run) checkNodesMatch(items []Item, timeout time.Duration) {
	for _, n := range r.C.Nodes {
		var want []Item
		for _, it := range items {
			if it.Value.Node == n.Name {
				want = append(want, it)
			}
		}
		r.cnt.check(InvNodeMatches, 1)
		err := eventually(timeout, func() error {
			s, err := Observe(n)
			if err != nil {
				return err
			}
			return mismatch(s, want)
		})
		if err != nil {
			r.violate(InvNodeMatches, n.Name, fmt.Sprintf("%s: %v", n.Name, err))
		}
	}
}

// mismatch compares a node's state with the instances the API places there.
func mismatch(s NodeState, want []Item) error {
	pods, fns, exposed, all := set(), set(), set(), set()
	for _, it := range want {
		all[it.ID] = true
		if it.Value.Kind == workload.KindFunction {
			fns[it.ID] = true
		} else {
			pods[it.ID] = true
		}
		if len(it.Value.Ports) > 0 {
			exposed[it.ID] = true
		}
	}
	var diffs []string
	cmp := func(what string, got, want map[string]bool) {
		if !maps.Equal(got, want) {
			diffs = append(diffs, fmt.Sprintf("%s %v, want %v", what, keys(got), keys(want)))
		}
	}
	count := func(what string, got map[string]bool, want int) {
		if len(got) != want {
			diffs = append(diffs, fmt.Sprintf("%s %v, want %d", what, keys(got), want))
		}
	}
	cmp("running containers", s.Containers, pods)
	cmp("stopped containers", s.Stopped, set())
	cmp("netns", s.Netns, pods)
	count("veths", s.Veths, len(pods))
	cmp("leases", s.Leases, all)
	cmp("DNAT rules", s.DNAT, exposed)
	cmp("cgroups", s.Cgroups, pods)
	ledger := set()
	for id := range s.Ledger {
		ledger[id] = true
	}
	cmp("ledger", ledger, all)
	count("VMs", s.VMs, len(fns))
	count("TAPs", s.Taps, len(fns))
	if len(diffs) > 0 {
		return fmt.Errorf("%s", strings.Join(diffs, "; "))
	}
	return nil
}

// DeleteAll deletes every instance, waits until they are gone and checks
// nothing is left on any node.
func (r *Run) DeleteAll(timeout time.Duration) {
	r.tl.Add("deleting everything")
	deadline := time.Now().Add(timeout)
	for {
		items, err := r.C.Instances()
		if err == nil && len(items) == 0 {
			break
		}
		if err == nil {
			for _, it := range items {
				r.mu.Lock()
				tr := r.tracked[it.Name]
				if tr != nil {
					tr.deleted = true
				}
				r.mu.Unlock()
				if !it.Value.DeleteRequested {
					_ = r.C.DeleteInstance(it.ID)
				}
			}
		}
		if time.Now().After(deadline) {
			r.cnt.check(InvSettles, 1)
			r.violate(InvSettles, "delete-all", fmt.Sprintf("instances still listed %s after deleting everything: %v", timeout, summary(items)))
			return
		}
		r.Poll()
		time.Sleep(time.Second)
	}
	r.tl.Add("everything deleted")
	r.checkNodesMatch(nil, 60*time.Second)
	r.cnt.check(InvNodeEmpty, len(r.C.Nodes))
}

// Uninstall stops the riklets and runs `riklet --uninstall` on each node:
// it must work, and leave no chain, bridge nor TAP.
func (r *Run) Uninstall() {
	for _, n := range r.C.Nodes {
		n.Riklet.Stop(syscall.SIGTERM)
		r.cnt.check(InvUninstall, 1)
		out, err := r.C.Uninstall(n)
		if err != nil {
			r.violate(InvUninstall, n.Name, fmt.Sprintf("%s: riklet --uninstall: %v: %s", n.Name, err, out))
			continue
		}
		s, err := Observe(n)
		switch {
		case err != nil:
			r.violate(InvUninstall, n.Name, err.Error())
		case s.Chains || s.Bridge || len(s.Taps) > 0 || len(s.DNAT) > 0:
			r.violate(InvUninstall, n.Name, fmt.Sprintf("%s after --uninstall: chains %v, bridge %v, TAPs %v, DNAT %v", n.Name, s.Chains, s.Bridge, keys(s.Taps), keys(s.DNAT)))
		}
	}
}

func summary(items []Item) []string {
	var s []string
	for _, it := range items {
		s = append(s, fmt.Sprintf("%s %s on %q (%s)", it.Name, it.Value.Status, it.Value.Node, it.Value.Reason))
	}
	return s
}

func set() map[string]bool { return map[string]bool{} }

func keys(m map[string]bool) []string { return slices.Sorted(maps.Keys(m)) }

// eventually calls fn until it returns nil, or returns its last error
// after timeout.
func eventually(timeout time.Duration, fn func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(500 * time.Millisecond)
	}
}
