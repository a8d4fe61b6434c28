package natsbus

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
)

// serverLogger routes the embedded nats-server's log lines to slog. The
// server calls it from many goroutines.
type serverLogger struct {
	log *slog.Logger

	mu    sync.Mutex
	fatal string // the last fatal message, to explain a server that never got ready
}

// levelTrace is below debug: the server's protocol tracing is too chatty to
// share a level with its debug lines.
const levelTrace = slog.LevelDebug - 4

// The embedded server's notices (its banner, every start and stop step) are
// routine for authd: debug, so they do not drown authd's own log.
func (l *serverLogger) Noticef(format string, v ...any) { l.emit(slog.LevelDebug, format, v) }
func (l *serverLogger) Warnf(format string, v ...any)   { l.emit(slog.LevelWarn, format, v) }
func (l *serverLogger) Errorf(format string, v ...any)  { l.emit(slog.LevelError, format, v) }
func (l *serverLogger) Debugf(format string, v ...any)  { l.emit(slog.LevelDebug, format, v) }
func (l *serverLogger) Tracef(format string, v ...any)  { l.emit(levelTrace, format, v) }

// Fatalf only logs: nats-server's own logger exits the process here, which
// must not happen to authd because of a port clash in its embedded server.
func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.mu.Lock()
	l.fatal = msg
	l.mu.Unlock()
	l.log.Error(msg, "fatal", true)
}

func (l *serverLogger) emit(level slog.Level, format string, v []any) {
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, fmt.Sprintf(format, v...))
	}
}

func (l *serverLogger) fatalMessage() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fatal
}
