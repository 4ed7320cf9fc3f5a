package e2e

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/controllerpb"
	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/testutil/netns"
	"github.com/rik-org/rik/internal/workload"
)

func wantCode(t testing.TB, what string, err error, want ...codes.Code) {
	t.Helper()
	for _, w := range want {
		if status.Code(err) == w {
			return
		}
	}
	t.Fatalf("%s: %v, want %v", what, err, want)
}

// nodeCPU is node name's capacity as the scheduler lists it to ctrl.
func nodeCPU(ctrl controllerpb.ControllerClient, name string) (int64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nodes, err := ctrl.ListNodes(ctx, &emptypb.Empty{})
	if err != nil {
		return 0, err
	}
	for _, n := range nodes.GetNodes() {
		if n.GetName() == name {
			return n.GetCapacity().GetCpuMillis(), nil
		}
	}
	return 0, fmt.Errorf("node %s not listed", name)
}

// TestNodeIdentity is issue 7 on a cluster with mutual TLS (the default):
// a worker without certificate cannot register; nodes join with a token
// and the CA's hash; node A's certificate cannot register as B nor report
// B's instances; a second node under a live node's name is refused; a
// client without a controller certificate can neither subscribe nor send
// orders on 4996.
func TestNodeIdentity(t *testing.T) {
	requireHost(t)
	c := newCluster(t, clusterOptions{})
	live := c.addNode("--pods=false") // a real riklet: joined with its own token
	c.waitNodesReady("", 60*time.Second, live.name)
	nsA, nsB := c.attach("node-a", "172.31.0.50"), c.attach("node-b", "172.31.0.51")
	ctrl := controllerpb.NewControllerClient(c.dialFrom(c.client, ctrlAddr, c.tlsAs(c.issue(pki.RoleController, "test"))))

	// No certificate, or plaintext: no registration.
	_, err := registerWorker(t, c.dialFrom(nsA, workersAddr, c.tlsAs(pki.Pair{})), "node-a")
	wantCode(t, "Register without certificate", err, codes.Unauthenticated)
	_, err = registerWorker(t, c.dialFrom(nsA, workersAddr, plaintext()), "node-a")
	wantCode(t, "Register in plaintext", err, codes.Unavailable)

	// B joins and runs an instance created through the API.
	pairB, err := c.join(nsB, "node-b", c.token("1h"))
	if err != nil {
		t.Fatalf("node-b joining: %v", err)
	}
	b, err := registerWorker(t, c.dialFrom(nsB, workersAddr, c.tlsAs(pairB)), "node-b", "pod")
	if err != nil {
		t.Fatalf("node-b registering: %v", err)
	}
	def := c.writeFile("web.json", bigPod("web"))
	c.mustRikctl("create", "workload", "-f", def)
	c.mustRikctl("create", "instance", "--workload-id", "web", "--name", "web-0")
	order := b.expectOrder(commonpb.WorkloadRequestKind_CREATE)
	if err := b.report("", order.GetInstanceId(), commonpb.ResourceStatus_RUNNING); err != nil {
		t.Fatal(err)
	}
	c.waitStatus("web-0", workload.StatusRunning, 30*time.Second)

	// A joins, may not register as B, registers as itself.
	pairA, err := c.join(nsA, "node-a", c.token("1h"))
	if err != nil {
		t.Fatalf("node-a joining: %v", err)
	}
	connA := c.dialFrom(nsA, workersAddr, c.tlsAs(pairA))
	_, err = registerWorker(t, connA, "node-b")
	wantCode(t, "node-a registering as node-b", err, codes.PermissionDenied)
	a, err := registerWorker(t, connA, "node-a", "function") // nothing the test places
	if err != nil {
		t.Fatalf("node-a registering: %v", err)
	}
	// A (which runs nothing) reports B's instance failed: dropped. Its own
	// heartbeat after it
	// shows when the scheduler has handled it.
	if err := a.report("", order.GetInstanceId(), commonpb.ResourceStatus_FAILED); err != nil {
		t.Fatal(err)
	}
	if err := a.heartbeat(1234); err != nil {
		t.Fatal(err)
	}
	c.eventually(30*time.Second, "node-a's heartbeat handled", func() error {
		cpu, err := nodeCPU(ctrl, "node-a")
		if err == nil && cpu != 1234 {
			err = fmt.Errorf("node-a cpu %d", cpu)
		}
		return err
	})
	// A speaking as B: its stream is cut.
	_ = a.report("node-b", order.GetInstanceId(), commonpb.ResourceStatus_FAILED)
	err = a.closeStatuses()
	wantCode(t, "node-a's status as node-b", err, codes.PermissionDenied)

	// A second node1 (another key, issued by the CA) is refused while the
	// real one is live, and so is a join under its name.
	_, err = registerWorker(t, c.dialFrom(nsA, workersAddr, c.tlsAs(c.issue(pki.RoleNode, live.name))), live.name)
	wantCode(t, "a second "+live.name, err, codes.AlreadyExists)
	_, err = c.join(nsA, live.name, c.token("1h"))
	wantCode(t, "joining as the live "+live.name, err, codes.AlreadyExists)
	c.waitNodesReady("", 10*time.Second, live.name)

	// The controllers' port: no certificate, a node's, or plaintext: no
	// subscription, no order.
	destroy := &controllerpb.WorkloadScheduling{InstanceId: order.GetInstanceId(), WorkloadId: order.GetWorkloadId(),
		Action: commonpb.WorkloadRequestKind_DESTROY, Node: "node-b"}
	for _, tc := range []struct {
		what  string
		creds credentials.TransportCredentials
	}{
		{"without certificate", c.tlsAs(pki.Pair{})},
		{"with a node certificate", c.tlsAs(pairA)},
		{"in plaintext", plaintext()},
	} {
		cl := controllerpb.NewControllerClient(c.dialFrom(c.client, ctrlAddr, tc.creds))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		stream, err := cl.GetStatusUpdates(ctx, &emptypb.Empty{})
		if err == nil {
			_, err = stream.Recv()
		}
		wantCode(t, "subscribing "+tc.what, err, codes.Unavailable, codes.Unauthenticated, codes.PermissionDenied)
		_, err = cl.ScheduleInstance(ctx, destroy)
		wantCode(t, "DESTROY "+tc.what, err, codes.Unavailable, codes.Unauthenticated, codes.PermissionDenied)
		cancel()
	}
	// B got no DESTROY: its next order is the CREATE of a new instance.
	c.mustRikctl("create", "instance", "--workload-id", "web", "--name", "web-1")
	b.expectOrder(commonpb.WorkloadRequestKind_CREATE)
	if it := c.waitStatus("web-0", workload.StatusRunning, 10*time.Second); it.Value.Node != "node-b" {
		t.Fatalf("web-0 on %q, want node-b", it.Value.Node)
	}
}

// TestJoinTokens: a riklet with an expired or revoked join token, or the
// wrong CA hash, does not join and says why; a good token joins.
func TestJoinTokens(t *testing.T) {
	requireHost(t)
	c := newCluster(t, clusterOptions{})
	expired := c.token("1s")
	revoked := c.token("1h")
	c.mustRik("token", "revoke", "--ca-dir", c.pki, strings.Split(revoked, ".")[0])
	other := filepath.Join(c.dir, "other-pki")
	c.mustRik("ca", "init", "--dir", other)
	otherHash := strings.TrimSpace(c.mustRik("ca", "hash", "--dir", other))
	c.eventually(10*time.Second, "the 1s token expired", func() error {
		if _, err := pki.CheckToken(c.pki, expired, time.Now()); err == nil {
			return errors.New("still valid")
		}
		return nil
	})
	ns := c.attach("joiner", "172.31.0.60")

	for _, tc := range []struct{ name, token, hash, want string }{
		{"expired", expired, c.caHash, "invalid or expired join token"},
		{"revoked", revoked, c.caHash, "invalid or expired join token"},
		{"wrong-hash", c.token("1h"), otherHash, "does not match --ca-cert-hash"},
	} {
		out := c.rikletUntilExit(ns, tc.name, "--join-token", tc.token, "--ca-cert-hash", tc.hash)
		if !strings.Contains(out, tc.want) {
			t.Errorf("riklet with the %s token: output lacks %q:\n%s", tc.name, tc.want, out)
		}
		// The scheduler's answer, asked directly.
		if tc.hash == c.caHash {
			_, err := c.join(ns, tc.name, tc.token)
			wantCode(t, tc.name+" token", err, codes.Unauthenticated)
			if msg := status.Convert(err).Message(); msg != "invalid or expired join token" {
				t.Errorf("refusal says %q: more than the token is invalid", msg)
			}
		}
	}
	// A good token: the riklet joins and registers; restarted without
	// the token, it uses the certificate it saved.
	n := c.addNode("--pods=false")
	c.waitNodesReady("", 60*time.Second, n.name)
	args := n.riklet.args
	for i, a := range args {
		if a == "--join-token" {
			n.riklet.args = append(args[:i:i], args[i+2:]...)
			break
		}
	}
	if slices.Contains(n.riklet.args, "--join-token") {
		t.Fatal("the riklet's --join-token was not dropped")
	}
	c.crashRiklet(n)
}

// rikletUntilExit runs a riklet in ns that must exit by itself (within a
// minute) and returns its output.
func (c *cluster) rikletUntilExit(ns *netns.NS, name string, args ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	full := append([]string{"--net=" + ns.Path, "--", c.bins.riklet, "--master-ip", workersAddr, "--hostname", name,
		"--state-dir", filepath.Join(c.dir, "exit-"+name), "--pods=false"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", full...).CombinedOutput()
	if ctx.Err() != nil {
		c.t.Fatalf("riklet %s still running after a minute:\n%s", name, out)
	}
	if err == nil {
		c.t.Fatalf("riklet %s exited 0:\n%s", name, out)
	}
	return string(out)
}
