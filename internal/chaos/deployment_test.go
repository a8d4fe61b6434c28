//go:build chaos

package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/authd/authd/internal/testenv"
)

// binaries are the programs the suite runs, built once per run.
type binaries struct {
	authd, authctl string
	// nats maps a NATS version's name to its nats-server.
	nats map[string]string
}

// build builds authd, authctl and the nats-server of the module authd
// embeds (2.15), beside the machine's 2.9 one.
func build(t *testing.T) binaries {
	t.Helper()
	dir := t.TempDir()
	b := binaries{
		authd: filepath.Join(dir, "authd"), authctl: filepath.Join(dir, "authctl"),
		nats: map[string]string{"nats-2.9": testenv.MachineNATSBinary, "nats-2.15": filepath.Join(dir, "nats-server-2.15")},
	}
	run(t, "go", "build", "-o", dir+"/", "github.com/authd/authd/cmd/authd", "github.com/authd/authd/cmd/authctl")
	run(t, "go", "build", "-o", b.nats["nats-2.15"], "github.com/nats-io/nats-server/v2")
	return b
}

// masterKey is every instance's AUTHD_MASTER_KEY (32 bytes of 7): they
// share one log.
const masterKey = "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc="

// instance is one authd process. While up, the workload may send it
// requests; it is marked down before it is killed.
type instance struct {
	name string
	base string
	bin  string
	env  []string
	logs string
	cmd  *exec.Cmd
	// probe asks /readyz and /metrics, with a timeout of its own.
	probe *http.Client
	up    atomic.Bool
	// kills counts the times it was killed, so a check can tell an effect
	// lost with the process (a mail still queued) from one lost by a live one.
	kills atomic.Int64
}

func newInstance(t *testing.T, name, bin string, env map[string]string) *instance {
	t.Helper()
	port := testenv.FreePort(t)
	in := &instance{name: name, base: fmt.Sprintf("http://127.0.0.1:%d", port), bin: bin, logs: filepath.Join(t.TempDir(), name+".log"),
		probe: &http.Client{Timeout: 5 * time.Second}}
	env["AUTHD_ADDR"] = fmt.Sprintf("127.0.0.1:%d", port)
	env["AUTHD_DATA_DIR"] = t.TempDir()
	in.env = os.Environ()
	for k, v := range env {
		in.env = append(in.env, k+"="+v)
	}
	t.Cleanup(func() {
		in.kill()
		if t.Failed() {
			t.Logf("last lines of %s's log:\n%s", in.name, tail(in.logs, 40))
		}
	})
	return in
}

// start runs the process (again, after a kill, on the same port and
// database) and waits until its /readyz answers 200.
func (in *instance) start(t *testing.T) {
	t.Helper()
	logs, err := os.OpenFile(in.logs, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close() // the child has its own copy
	cmd := exec.Command(in.bin)
	cmd.Env, cmd.Stdout, cmd.Stderr = in.env, logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", in.name, err)
	}
	in.cmd = cmd
	deadline := time.Now().Add(90 * time.Second)
	for {
		if status, _ := in.readyz(); status == http.StatusOK {
			in.up.Store(true)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not ready 90 s after its start; log:\n%s", in.name, tail(in.logs, 40))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// kill ends the process with SIGKILL, as a crash or an OOM kill would.
func (in *instance) kill() {
	in.up.Store(false)
	if in.cmd == nil {
		return
	}
	in.kills.Add(1)
	_ = in.cmd.Process.Signal(syscall.SIGKILL)
	_ = in.cmd.Wait()
	in.cmd = nil
}

// readyz is the instance's readiness answer: status and body (0 when it
// does not answer).
func (in *instance) readyz() (int, string) {
	resp, err := in.probe.Get(in.base + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// leadsRelay says whether the instance's /metrics says it holds the relay.
func (in *instance) leadsRelay() (bool, error) {
	resp, err := in.probe.Get(in.base + "/metrics")
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == "authd_relay_leader" {
			return f[1] == "1", nil
		}
	}
	return false, errors.New("no authd_relay_leader in /metrics")
}

// logSize is how much the instance has logged so far, for since.
func (in *instance) logSize() int64 {
	st, err := os.Stat(in.logs)
	if err != nil {
		return 0
	}
	return st.Size()
}

// logSince is what the instance logged past offset, at most n lines (the
// last ones), leaving out the lines of single requests.
func (in *instance) logSince(offset int64, n int) string {
	b, err := os.ReadFile(in.logs)
	if err != nil {
		return err.Error()
	}
	var lines []string
	for _, l := range strings.Split(string(b[min(offset, int64(len(b))):]), "\n") {
		if l != "" && !strings.Contains(l, `"msg":"request"`) {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// tail is the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// deployment is one authd deployment under test: a database on the chaos
// Postgres cluster, a three-node JetStream cluster and three instances.
type deployment struct {
	pg        *pgCluster
	database  string
	nats      []*testenv.NATSProcess
	instances []*instance
	authctl   string
	env       map[string]string // what authctl needs to find the log and the stream
}

func deploy(t *testing.T, bins binaries, natsVersion string, pg *pgCluster, mail *testenv.MailpitServer) *deployment {
	t.Helper()
	d := &deployment{pg: pg, database: "authd_" + testenv.Suffix(), authctl: bins.authctl}
	d.nats = testenv.StartNATSCluster(t, 3, bins.nats[natsVersion])
	urls := make([]string, len(d.nats))
	for i, n := range d.nats {
		urls[i] = n.URL
	}
	// What authd and authctl share: authctl check opens personal fields of
	// events, so it needs the master key as authd does.
	d.env = map[string]string{"DATABASE_URL": pg.url(d.database), "NATS_URL": strings.Join(urls, ","), "AUTHD_MASTER_KEY": masterKey}
	for i := range 3 {
		env := map[string]string{
			"AUTHD_NATS_REPLICAS": "3", "AUTHD_RATE_LIMIT": "off", "SMTP_URL": mail.SMTPURL(),
			// Requests are logged at 5xx only: the suite's own record says
			// what was answered, and three instances share two cores.
			"AUTHD_REQUEST_LOG": "0",
		}
		for k, v := range d.env {
			env[k] = v
		}
		in := newInstance(t, fmt.Sprintf("authd%d", i), bins.authd, env)
		d.instances = append(d.instances, in)
		in.start(t)
	}
	return d
}

// relayHolder is the instance whose /metrics says it holds the relay,
// waiting (bounded) for one to take it.
func (d *deployment) relayHolder(t *testing.T) *instance {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, in := range d.instances {
			if lead, err := in.leadsRelay(); err == nil && lead && in.up.Load() {
				return in
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no instance holds the relay after 30 s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// streamLeader is the NATS node that leads the events stream, as
// JetStream's stream info ($JS.API.STREAM.INFO) reports it.
func (d *deployment) streamLeader(t *testing.T) *testenv.NATSProcess {
	t.Helper()
	info, err := d.streamInfo(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 {
		t.Fatalf("the events stream has %d replicas; want 3", info.Config.Replicas)
	}
	for _, n := range d.nats {
		if n.Name == info.Cluster.Leader {
			return n
		}
	}
	t.Fatalf("the events stream is led by %q, none of the cluster's nodes", info.Cluster.Leader)
	return nil
}

// streamInfo asks the cluster for the events stream's info, which its
// leader answers.
func (d *deployment) streamInfo(timeout time.Duration) (*jetstream.StreamInfo, error) {
	nc, err := nats.Connect(d.env["NATS_URL"], nats.Timeout(timeout))
	if err != nil {
		return nil, fmt.Errorf("connect to the NATS cluster: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	s, err := js.Stream(ctx, "AUTH_EVENTS")
	if err != nil {
		return nil, fmt.Errorf("events stream info: %w", err)
	}
	info := s.CachedInfo()
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return nil, fmt.Errorf("the events stream reports no leader: %+v", info.Cluster)
	}
	return info, nil
}

// checkReport is the part of `authctl check`'s JSON report the suite reads.
type checkReport struct {
	Consistent bool     `json:"consistent"`
	Problems   []string `json:"problems"`
	Stream     struct {
		Messages int64 `json:"messages"`
		Matched  int64 `json:"matched"`
	} `json:"stream"`
}

// check runs `authctl check` against the deployment: it must exit 0 and
// report the log, the stream and every read model consistent.
func (d *deployment) check(t *testing.T) checkReport {
	t.Helper()
	cmd := exec.Command(d.authctl, "check", "--timeout", "90s")
	cmd.Env = os.Environ()
	for k, v := range d.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var report checkReport
	if jerr := json.Unmarshal(stdout.Bytes(), &report); jerr != nil {
		t.Fatalf("authctl check: %v, report unreadable (%v):\n%s\n%s", err, jerr, stdout.String(), stderr.String())
	}
	if err != nil || !report.Consistent || len(report.Problems) > 0 {
		t.Fatalf("authctl check: %v, consistent %v, problems %q\n%s", err, report.Consistent, report.Problems, stderr.String())
	}
	return report
}
