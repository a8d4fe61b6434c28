// Package cdp drives a headless Chromium over the Chrome DevTools Protocol
// for tests, through --remote-debugging-pipe: the browser reads commands
// from file descriptor 3 and writes answers and events to descriptor 4, as
// NUL-terminated JSON messages. No port, no WebSocket, no downloads: only
// the browser the machine has (Debian's chromium).
package cdp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"time"
)

// Flags start Chromium headless and quiet: no sandbox (tests run as root),
// no GPU, and none of the background connections a machine without the
// internet would refuse.
var Flags = []string{
	"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
	"--disable-background-networking", "--disable-component-update", "--disable-sync",
	"--disable-default-apps", "--disable-extensions", "--mute-audio", "--no-default-browser-check",
}

// Browser is a running Chromium.
type Browser struct {
	cmd     *exec.Cmd
	out     *os.File // our end of the browser's descriptor 3
	dataDir string
	stderr  *lockedBuffer
	exited  chan struct{}

	mu      sync.Mutex
	nextID  int64
	pending map[int64]chan reply
	onEvent []func(Event)
	readErr error
}

// Event is a protocol event; SessionID names the target it came from.
type Event struct {
	Method    string          `json:"method"`
	Params    json.RawMessage `json:"params"`
	SessionID string          `json:"sessionId,omitempty"`
}

type reply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
		Data    string `json:"data"`
	} `json:"error"`
}

// command is what we send; message is what the browser sends.
type command struct {
	ID        int64           `json:"id"`
	Method    string          `json:"method"`
	Params    json.RawMessage `json:"params,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
}

type message struct {
	ID        int64           `json:"id,omitempty"`
	Method    string          `json:"method,omitempty"`
	Params    json.RawMessage `json:"params,omitempty"`
	SessionID string          `json:"sessionId,omitempty"`
	reply
}

// Launch starts the browser at exe with Flags, a fresh profile in a
// temporary directory, and extra arguments.
func Launch(exe string, extra ...string) (*Browser, error) {
	dataDir, err := os.MkdirTemp("", "authd-chromium-")
	if err != nil {
		return nil, err
	}
	toBrowserR, toBrowserW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	fromBrowserR, fromBrowserW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	args := append(append([]string{}, Flags...), "--user-data-dir="+dataDir, "--remote-debugging-pipe")
	args = append(append(args, extra...), "about:blank")
	cmd := exec.Command(exe, args...)
	cmd.ExtraFiles = []*os.File{toBrowserR, fromBrowserW} // descriptors 3 and 4
	b := &Browser{cmd: cmd, out: toBrowserW, dataDir: dataDir, stderr: &lockedBuffer{}, exited: make(chan struct{}), pending: map[int64]chan reply{}}
	cmd.Stdout, cmd.Stderr = b.stderr, b.stderr
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dataDir)
		return nil, fmt.Errorf("start %s: %w", exe, err)
	}
	toBrowserR.Close()
	fromBrowserW.Close()
	go func() { _ = cmd.Wait(); close(b.exited) }()
	go b.read(fromBrowserR)
	return b, nil
}

func (b *Browser) read(r io.ReadCloser) {
	defer r.Close()
	br := bufio.NewReaderSize(r, 1<<20)
	for {
		raw, err := br.ReadBytes(0)
		if err != nil {
			b.fail(fmt.Errorf("the browser closed its pipe: %w", err))
			return
		}
		var m message
		if err := json.Unmarshal(raw[:len(raw)-1], &m); err != nil {
			b.fail(fmt.Errorf("a message from the browser is not JSON: %w", err))
			return
		}
		b.mu.Lock()
		if m.ID != 0 {
			ch := b.pending[m.ID]
			delete(b.pending, m.ID)
			b.mu.Unlock()
			if ch != nil {
				ch <- m.reply
			}
			continue
		}
		handlers := append([]func(Event){}, b.onEvent...)
		b.mu.Unlock()
		for _, h := range handlers {
			h(Event{Method: m.Method, Params: m.Params, SessionID: m.SessionID})
		}
	}
}

func (b *Browser) fail(err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.readErr == nil {
		b.readErr = err
	}
	for id, ch := range b.pending {
		close(ch)
		delete(b.pending, id)
	}
}

// OnEvent calls h with every event from now on, on the reading goroutine.
func (b *Browser) OnEvent(h func(Event)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.onEvent = append(b.onEvent, h)
}

// Call sends a command to the browser (sessionID "") or to an attached
// target, and decodes its result into result when not nil.
func (b *Browser) Call(ctx context.Context, sessionID, method string, params, result any) error {
	if params == nil {
		params = struct{}{}
	}
	p, err := json.Marshal(params)
	if err != nil {
		return err
	}
	b.mu.Lock()
	if b.readErr != nil {
		err := b.readErr
		b.mu.Unlock()
		return fmt.Errorf("%s: %w", method, err)
	}
	b.nextID++
	id := b.nextID
	ch := make(chan reply, 1)
	b.pending[id] = ch
	b.mu.Unlock()
	msg, err := json.Marshal(command{ID: id, Method: method, Params: p, SessionID: sessionID})
	if err != nil {
		return err
	}
	if _, err := b.out.Write(append(msg, 0)); err != nil {
		return fmt.Errorf("%s: write to the browser: %w", method, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return fmt.Errorf("%s: the browser went away", method)
		}
		if r.Error != nil {
			return fmt.Errorf("%s: %s (%d) %s", method, r.Error.Message, r.Error.Code, r.Error.Data)
		}
		if result != nil {
			return json.Unmarshal(r.Result, result)
		}
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// NewPage opens a blank tab and attaches to it, returning the session id
// to send the page's commands to.
func (b *Browser) NewPage(ctx context.Context) (string, error) {
	var created struct {
		TargetID string `json:"targetId"`
	}
	if err := b.Call(ctx, "", "Target.createTarget", map[string]any{"url": "about:blank"}, &created); err != nil {
		return "", err
	}
	var attached struct {
		SessionID string `json:"sessionId"`
	}
	if err := b.Call(ctx, "", "Target.attachToTarget", map[string]any{"targetId": created.TargetID, "flatten": true}, &attached); err != nil {
		return "", err
	}
	return attached.SessionID, nil
}

// Evaluate runs a JavaScript expression in a page and decodes its value.
func (b *Browser) Evaluate(ctx context.Context, session, expression string, value any) error {
	var out struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	err := b.Call(ctx, session, "Runtime.evaluate", map[string]any{"expression": expression, "returnByValue": true, "awaitPromise": true}, &out)
	if err != nil {
		return err
	}
	if out.ExceptionDetails != nil {
		return fmt.Errorf("evaluate %q: %s", expression, out.ExceptionDetails.Text)
	}
	if value == nil || len(out.Result.Value) == 0 {
		return nil
	}
	return json.Unmarshal(out.Result.Value, value)
}

// Output is what the browser printed on stdout and stderr.
func (b *Browser) Output() string { return b.stderr.String() }

// Close asks the browser to close, kills it if it has not within a few
// seconds, and removes its profile.
func (b *Browser) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = b.Call(ctx, "", "Browser.close", nil, nil)
	select {
	case <-b.exited:
	case <-time.After(5 * time.Second):
		_ = b.cmd.Process.Kill()
		<-b.exited
	}
	b.out.Close()
	return errors.Join(os.RemoveAll(b.dataDir))
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() > 1<<20 {
		return len(p), nil
	}
	return l.buf.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
