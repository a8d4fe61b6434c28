package testenv

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authd/authd/internal/natsbus"
)

// natsServerBinary is the machine's nats-server (Debian's 2.9.10).
const natsServerBinary = "/usr/sbin/nats-server"

// NATSProcess is a nats-server process of the test's own, with JetStream, on
// a free loopback port: a NATS the test may freeze, kill and start again,
// which the machine's shared one is not.
type NATSProcess struct {
	URL     string
	port    int
	dataDir string
	args    []string // besides address, port and log
	cmd     *exec.Cmd
	t       testing.TB
}

// StartNATSProcess starts a nats-server with JetStream for the test and
// kills it when the test ends.
func StartNATSProcess(t testing.TB) *NATSProcess {
	t.Helper()
	p := newNATSProcess(t)
	p.args = []string{"-js", "-sd", filepath.Join(p.dataDir, "js")}
	p.Start()
	t.Cleanup(p.Kill)
	return p
}

// StartNATSPair starts two JetStream nats-servers in one cluster, named
// "n0" and "n1", and waits until the cluster answers JetStream requests.
// A single-replica stream lives on one of them (StreamNode says which): a
// client connected to the other keeps its connection when that node is
// killed, and what the other had forwarded to it is lost, as when the node
// holding a stream dies in a larger cluster.
func StartNATSPair(t testing.TB) [2]*NATSProcess {
	t.Helper()
	nodes := [2]*NATSProcess{newNATSProcess(t), newNATSProcess(t)}
	routes := [2]int{FreePort(t), FreePort(t)}
	route := func(port int) string { return fmt.Sprintf("nats://127.0.0.1:%d", port) }
	cluster := "t" + Suffix()
	for i, n := range nodes {
		n.args = []string{"-n", fmt.Sprintf("n%d", i), "-js", "-sd", filepath.Join(n.dataDir, "js"),
			"--cluster_name", cluster, "--cluster", route(routes[i]), "--routes", route(routes[1-i])}
		n.Start()
		t.Cleanup(n.Kill)
	}
	nc, err := nats.Connect(nodes[0].URL)
	if err != nil {
		t.Fatalf("connect to the NATS pair: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return nodes
		}
		if time.Now().After(deadline) {
			t.Fatalf("the NATS pair has no JetStream after 60s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// StreamNode says which of a StartNATSPair's nodes holds the stream.
func StreamNode(t testing.TB, nodes [2]*NATSProcess, stream jetstream.Stream) (holder, other *NATSProcess) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if info.Cluster == nil {
		t.Fatal("the stream reports no cluster")
	}
	switch info.Cluster.Leader {
	case "n0":
		return nodes[0], nodes[1]
	case "n1":
		return nodes[1], nodes[0]
	}
	t.Fatalf("the stream is led by %q, neither node of the pair", info.Cluster.Leader)
	return nil, nil
}

func newNATSProcess(t testing.TB) *NATSProcess {
	p := &NATSProcess{port: FreePort(t), dataDir: t.TempDir(), t: t}
	p.URL = fmt.Sprintf("nats://127.0.0.1:%d", p.port)
	return p
}

// Config is a natsbus configuration on this server with a stream and
// subjects of the test's own.
func (p *NATSProcess) Config() natsbus.Config {
	sfx := Suffix()
	return natsbus.Config{URL: p.URL, Stream: "AUTH_EVENTS_P" + strings.ToUpper(sfx), SubjectPrefix: "p" + sfx + ".auth.events"}
}

// Start starts the server again (after Kill) on the same port and storage,
// and waits until it accepts connections.
func (p *NATSProcess) Start() {
	p.t.Helper()
	if p.cmd != nil {
		p.t.Fatal("nats-server is already running")
	}
	args := append([]string{"-a", "127.0.0.1", "-p", fmt.Sprint(p.port), "-l", filepath.Join(p.dataDir, "nats-server.log")}, p.args...)
	cmd := exec.Command(natsServerBinary, args...)
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s (apt-get install nats-server): %v", natsServerBinary, err)
	}
	p.cmd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.port), time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("nats-server on port %d does not accept connections after 30s: %v", p.port, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Kill ends the server with SIGKILL, as a crash would, and waits for it.
func (p *NATSProcess) Kill() {
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // a frozen process dies just the same, but waits no longer
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.cmd = nil
}

// Freeze stops the server with SIGSTOP: connections stay open and nothing is
// answered, as with a node that hangs or a network that drops everything.
func (p *NATSProcess) Freeze() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		p.t.Fatalf("freeze nats-server: %v", err)
	}
}

// Thaw resumes a frozen server.
func (p *NATSProcess) Thaw() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		p.t.Fatalf("thaw nats-server: %v", err)
	}
}
