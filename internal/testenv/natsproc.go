package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authd/authd/internal/natsbus"
)

// MachineNATSBinary is the machine's nats-server (Debian's 2.9.10).
const MachineNATSBinary = "/usr/sbin/nats-server"

// NATSProcess is a nats-server process of the test's own, with JetStream, on
// a free loopback port: a NATS the test may freeze, kill and start again,
// which the machine's shared one is not.
type NATSProcess struct {
	URL string
	// Name is the server's name in its cluster ("n0"...), as JetStream
	// reports a stream's leader; empty outside a cluster.
	Name    string
	binary  string
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
	nodes := StartNATSCluster(t, 2, MachineNATSBinary)
	return [2]*NATSProcess{nodes[0], nodes[1]}
}

// StartNATSCluster starts n JetStream nats-servers of binary in one cluster,
// named "n0", "n1"..., each routing to all the others, and waits until the
// cluster answers JetStream requests (a meta leader is elected). It kills
// them when the test ends.
func StartNATSCluster(t testing.TB, n int, binary string) []*NATSProcess {
	t.Helper()
	nodes := make([]*NATSProcess, n)
	routes := make([]string, n)
	for i := range nodes {
		nodes[i] = newNATSProcess(t)
		nodes[i].binary = binary
		nodes[i].Name = fmt.Sprintf("n%d", i)
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", FreePort(t))
	}
	cluster := "t" + Suffix()
	for i, node := range nodes {
		others := slices.Delete(slices.Clone(routes), i, i+1)
		node.args = []string{"-n", node.Name, "-js", "-sd", filepath.Join(node.dataDir, "js"),
			"--cluster_name", cluster, "--cluster", routes[i], "--routes", strings.Join(others, ",")}
		node.Start()
		t.Cleanup(node.Kill)
	}
	WaitForJetStream(t, nodes[0].URL, 60*time.Second)
	return nodes
}

// WaitForJetStream waits until the NATS at url answers JetStream requests,
// which a cluster does once it has elected a meta leader.
func WaitForJetStream(t testing.TB, url string, timeout time.Duration) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatalf("connect to NATS at %s: %v", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("NATS at %s has no JetStream after %s: %v", url, timeout, err)
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
	p := &NATSProcess{port: FreePort(t), dataDir: t.TempDir(), binary: MachineNATSBinary, t: t}
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
	cmd := exec.Command(p.binary, args...)
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s (the machine's: apt-get install nats-server): %v", p.binary, err)
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
	// No SIGCONT first: SIGKILL ends a frozen process where it stands,
	// while one resumed even for a moment could still answer what it held
	// (an ack a test means to be lost).
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.cmd = nil
}

// Freeze stops the server with SIGSTOP: connections stay open and nothing is
// answered, as with a node that hangs or a network that drops everything. It
// returns once every thread of the server has stopped: the signal arrives
// when it arrives, and a server still running a moment after it answered
// what the test had just sent for it not to answer.
func (p *NATSProcess) Freeze() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		p.t.Fatalf("freeze nats-server: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !stopped(p.cmd.Process.Pid) {
		if time.Now().After(deadline) {
			p.t.Fatalf("nats-server (pid %d) still running 30 s after SIGSTOP", p.cmd.Process.Pid)
		}
		time.Sleep(time.Millisecond)
	}
}

// stopped reports whether every thread of process pid is stopped, as
// /proc/PID/task/TID/stat says (state T, or t under a tracer).
func stopped(pid int) bool {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil || len(tasks) == 0 {
		return false
	}
	for _, task := range tasks {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/stat", pid, task.Name()))
		if err != nil {
			return false
		}
		// The state follows the command's name, which is in parentheses
		// and may itself hold any byte.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 || i+2 >= len(stat) || (stat[i+2] != 'T' && stat[i+2] != 't') {
			return false
		}
	}
	return true
}

// Thaw resumes a frozen server.
func (p *NATSProcess) Thaw() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		p.t.Fatalf("thaw nats-server: %v", err)
	}
}
