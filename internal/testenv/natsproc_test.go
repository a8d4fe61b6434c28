package testenv

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// A frozen server that is killed must answer nothing it received while
// frozen: tests freeze a node, have a publish reach it, and kill it so that
// its ack is lost.
func TestAKilledFrozenServerAnswersNothing(t *testing.T) {
	t.Parallel()
	for i := range 20 {
		srv := StartNATSProcess(t)
		conn, err := net.Dial("tcp", srv.URL[len("nats://"):])
		if err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(conn)
		if _, err := r.ReadString('\n'); err != nil { // INFO
			t.Fatal(err)
		}
		if _, err := fmt.Fprint(conn, "CONNECT {\"verbose\":false}\r\nPING\r\n"); err != nil {
			t.Fatal(err)
		}
		if l, err := r.ReadString('\n'); err != nil || !strings.HasPrefix(l, "PONG") {
			t.Fatalf("before the freeze: %q, %v; want PONG", l, err)
		}
		srv.Freeze()
		if _, err := fmt.Fprint(conn, "PING\r\n"); err != nil {
			t.Fatal(err)
		}
		srv.Kill()
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if l, err := r.ReadString('\n'); err == nil {
			t.Fatalf("run %d: the killed frozen server answered %q", i, l)
		}
		conn.Close()
	}
}
