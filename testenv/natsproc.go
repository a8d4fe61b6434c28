package testenv

import (
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
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
	cmd     *exec.Cmd
	t       testing.TB
}

// StartNATSProcess starts a nats-server for the test and kills it when the
// test ends.
func StartNATSProcess(t testing.TB) *NATSProcess {
	t.Helper()
	p := &NATSProcess{port: FreePort(t), dataDir: t.TempDir(), t: t}
	p.URL = fmt.Sprintf("nats://127.0.0.1:%d", p.port)
	p.Start()
	t.Cleanup(p.Kill)
	return p
}

// Start starts the server again (after Kill) on the same port and storage,
// and waits until it accepts connections.
func (p *NATSProcess) Start() {
	p.t.Helper()
	if p.cmd != nil {
		p.t.Fatal("nats-server is already running")
	}
	cmd := exec.Command(natsServerBinary, "-a", "127.0.0.1", "-p", fmt.Sprint(p.port), "-js",
		"-sd", filepath.Join(p.dataDir, "js"), "-l", filepath.Join(p.dataDir, "nats-server.log"))
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
