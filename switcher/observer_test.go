package switcher

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingObserver writes each call as one line.
type recordingObserver struct {
	mu    sync.Mutex
	calls []string
}

func (o *recordingObserver) add(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, s)
}

func (o *recordingObserver) HealthCheck(c Color, err error, d time.Duration) {
	o.add(fmt.Sprintf("health %s ok=%t", c, err == nil))
}
func (o *recordingObserver) SwitchDone(res Result, err error) {
	o.add(fmt.Sprintf("switch %s→%s drained=%d ok=%t drain>0=%t", res.From, res.To, res.Drained, err == nil, res.DrainDuration > 0))
}
func (o *recordingObserver) DeployDone(res Result, err error) { o.add("deploy") }
func (o *recordingObserver) Live(c Color, version string) {
	o.add(fmt.Sprintf("live %s %q", c, version))
}

func (o *recordingObserver) lines() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return strings.Join(o.calls, "\n")
}

func TestObserverSeesSwitch(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 200)
	obs := &recordingObserver{}
	f := newFixture(t, blue.addr(), green.addr(), Config{Observer: obs, HealthPasses: 2})
	f.router.inFlight[Blue].Store(1)
	go func() {
		time.Sleep(50 * time.Millisecond)
		f.router.inFlight[Blue].Store(0)
	}()
	if _, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil); err != nil {
		t.Fatal(err)
	}
	want := strings.Join([]string{
		`live blue ""`,
		"health green ok=true",
		"health green ok=true",
		`live green ""`,
		"switch blue→green drained=1 ok=true drain>0=true",
	}, "\n")
	if got := obs.lines(); got != want {
		t.Errorf("observer calls:\n%s\nwant:\n%s", got, want)
	}
}

func TestObserverSeesFailedSwitch(t *testing.T) {
	blue, green := newHealthApp(t, 200), newHealthApp(t, 500)
	obs := &recordingObserver{}
	f := newFixture(t, blue.addr(), green.addr(), Config{Observer: obs, HealthInterval: 10 * time.Millisecond, HealthDeadline: 25 * time.Millisecond})
	if _, err := f.sw.Switch(context.Background(), SwitchRequest{}, nil); err == nil {
		t.Fatal("switch to an unhealthy app succeeded")
	}
	got := obs.lines()
	if !strings.Contains(got, "health green ok=false") || !strings.HasSuffix(got, "switch blue→green drained=0 ok=false drain>0=false") {
		t.Errorf("observer calls:\n%s\nwant failed health checks, then a failed switch", got)
	}
	if strings.Contains(got, "live green") {
		t.Errorf("observer calls:\n%s\ngreen reported live after a failed switch", got)
	}
}

func TestObserverSeesMonitorChecks(t *testing.T) {
	blue := newHealthApp(t, 200)
	obs := &recordingObserver{}
	f := newFixture(t, blue.addr(), deadAddr(t), Config{Observer: obs, MonitorEvery: 10 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		f.sw.Monitor(ctx)
		close(done)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(obs.lines(), "health green ok=false") || !strings.Contains(obs.lines(), "health blue ok=true") {
		if time.Now().After(deadline) {
			t.Fatalf("observer calls:\n%s\nwant monitor checks of both colours", obs.lines())
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}

func TestColorInJSONLogs(t *testing.T) {
	var b strings.Builder
	slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "live", Green)
	if !strings.Contains(b.String(), `"live":"green"`) {
		t.Errorf("JSON log line %s; want \"live\":\"green\"", b.String())
	}
}
