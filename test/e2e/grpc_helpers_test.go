package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/rik-org/rik/api/proto/commonpb"
	"github.com/rik-org/rik/api/proto/workerpb"
	"github.com/rik-org/rik/internal/pki"
	"github.com/rik-org/rik/internal/testutil/netns"
)

// The tests speak RIK's gRPC protocol to the scheduler themselves, from
// inside a namespace of the cluster, as a hostile or an old client would.

var (
	workersAddr = net.JoinHostPort(ctlIP, strconv.Itoa(workersPort))
	ctrlAddr    = net.JoinHostPort(ctlIP, strconv.Itoa(ctrlPort))
)

// dialFrom is a gRPC connection made from inside ns.
func (c *cluster) dialFrom(ns *netns.NS, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	c.t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var conn net.Conn
			err := ns.Do(func() error {
				var err error
				conn, err = (&net.Dialer{}).DialContext(ctx, "tcp", addr)
				return err
			})
			return conn, err
		}))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return conn
}

// plaintext are RIK's credentials: none.
func plaintext() credentials.TransportCredentials { return insecure.NewCredentials() }

// tlsAs trusts the cluster CA and presents pair (none if empty).
func (c *cluster) tlsAs(pair pki.Pair) credentials.TransportCredentials {
	c.t.Helper()
	caPEM, err := os.ReadFile(filepath.Join(c.pki, pki.CACertFile))
	if err != nil {
		c.t.Fatal(err)
	}
	cfg, err := pki.ClientTLS(pair, caPEM, "")
	if err != nil {
		c.t.Fatal(err)
	}
	return credentials.NewTLS(cfg)
}

// issue makes a certificate with the cluster's CA key, as an operator
// holding it could (another key for a node's name, a controller's).
func (c *cluster) issue(role pki.Role, name string) pki.Pair {
	c.t.Helper()
	ca, err := pki.Load(c.pki)
	if err != nil {
		c.t.Fatal(err)
	}
	cert, key, err := ca.Issue(pki.Template{Role: role, Name: name})
	if err != nil {
		c.t.Fatal(err)
	}
	return pki.Pair{CertPEM: cert, KeyPEM: key}
}

// join asks the scheduler for a node certificate for name with token, from
// ns, trusting the scheduler by the CA's hash: the riklet's join path.
func (c *cluster) join(ns *netns.NS, name, token string) (pki.Pair, error) {
	c.t.Helper()
	key, err := pki.NewKey()
	if err != nil {
		c.t.Fatal(err)
	}
	csr, err := pki.NewCSR(key, name)
	if err != nil {
		c.t.Fatal(err)
	}
	pinned, err := pki.PinnedTLS(c.caHash, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn := c.dialFrom(ns, workersAddr, credentials.NewTLS(pinned))
	got, err := workerpb.NewWorkerClient(conn).Join(ctx, &workerpb.JoinRequest{Token: token, Hostname: name, CsrPem: string(csr)})
	if err != nil {
		return pki.Pair{}, err
	}
	keyPEM, _ := pki.EncodeKey(key)
	return pki.Pair{CertPEM: []byte(got.GetCertificatePem()), KeyPEM: keyPEM}, nil
}

// rikWorker is a worker speaking RIK's protocol: Register, then statuses
// and a heartbeat every second.
type rikWorker struct {
	t        testing.TB
	name     string
	orders   chan *workerpb.InstanceScheduling
	cpu      atomic.Int64 // capacity sent in heartbeats
	mu       sync.Mutex   // one Send at a time
	statuses grpc.ClientStreamingClient[commonpb.WorkerStatus, emptypb.Empty]
}

// workerCPU is a test worker's CPU capacity: 2000 CPUs, so that it alone
// fits a bigPod.
const workerCPU = 2_000_000

// bigPod is a pod asking for 500 CPUs: it fits only on a test worker.
func bigPod(name string) string {
	return fmt.Sprintf(`{"apiVersion": "v1", "kind": "Pod", "name": %q, "restartPolicy": "Never",
  "spec": {"containers": [{"name": "c", "image": "registry.invalid/busybox", "resources": {"cpu": 500000, "memory": 64}}]}}`, name)
}

// registerWorker registers name over conn, offering kinds, and opens its
// status stream. It returns the refusal, if any.
func registerWorker(t testing.TB, conn *grpc.ClientConn, name string, kinds ...string) (*rikWorker, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	client := workerpb.NewWorkerClient(conn)
	stream, err := client.Register(ctx, &commonpb.WorkerRegistration{
		Hostname: name, Kinds: kinds, Capacity: &commonpb.Resources{CpuMillis: workerCPU, MemoryMib: 4096},
	})
	if err != nil {
		return nil, err
	}
	// Accepted: headers come; refused: the stream ends without.
	hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
	defer hcancel()
	hdr := make(chan error, 1)
	go func() {
		md, err := stream.Header()
		if err == nil && md == nil {
			_, err = stream.Recv()
			if err == nil {
				err = errors.New("stream ended without headers")
			}
		}
		hdr <- err
	}()
	select {
	case err := <-hdr:
		if err != nil {
			return nil, err
		}
	case <-hctx.Done():
		return nil, fmt.Errorf("registering %s: no answer", name)
	}
	w := &rikWorker{t: t, name: name, orders: make(chan *workerpb.InstanceScheduling, 100)}
	go func() {
		for {
			o, err := stream.Recv()
			if err != nil {
				close(w.orders)
				return
			}
			w.orders <- o
		}
	}()
	if w.statuses, err = client.SendStatusUpdates(ctx); err != nil {
		return nil, err
	}
	w.cpu.Store(workerCPU)
	go func() { // ends with the stream
		for ctx.Err() == nil {
			if w.heartbeat(w.cpu.Load()) != nil {
				return
			}
			time.Sleep(time.Second)
		}
	}()
	return w, nil
}

// send sends one status as identifier (the worker's name if empty).
func (w *rikWorker) send(identifier string, ws *commonpb.WorkerStatus) error {
	if identifier == "" {
		identifier = w.name
	}
	ws.Identifier = identifier
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.statuses.Send(ws)
}

// closeStatuses ends the status stream and returns how the scheduler
// ended it.
func (w *rikWorker) closeStatuses() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, err := w.statuses.CloseAndRecv()
	return err
}

func (w *rikWorker) report(identifier, instanceID string, st commonpb.ResourceStatus) error {
	return w.send(identifier, &commonpb.WorkerStatus{Status: &commonpb.WorkerStatus_Instance{
		Instance: &commonpb.InstanceMetric{InstanceId: instanceID, Status: st}}})
}

// heartbeat sends the node's capacity now, and from now on.
func (w *rikWorker) heartbeat(cpuMillis int64) error {
	w.cpu.Store(cpuMillis)
	return w.send("", &commonpb.WorkerStatus{Status: &commonpb.WorkerStatus_Worker{Worker: &commonpb.WorkerMetric{
		Status: commonpb.ResourceStatus_RUNNING, Capacity: &commonpb.Resources{CpuMillis: cpuMillis, MemoryMib: 4096}}}})
}

// expectOrder waits for the worker's next order and checks it.
func (w *rikWorker) expectOrder(action commonpb.WorkloadRequestKind) *workerpb.InstanceScheduling {
	w.t.Helper()
	select {
	case o, ok := <-w.orders:
		if !ok {
			w.t.Fatalf("%s: order stream ended", w.name)
		}
		if o.GetAction() != action {
			w.t.Fatalf("%s: got order %s %s, want %s", w.name, o.GetAction(), o.GetInstanceId(), action)
		}
		return o
	case <-time.After(30 * time.Second):
		w.t.Fatalf("%s: no %s order", w.name, action)
	}
	return nil
}
