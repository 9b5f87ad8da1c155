package switcher

import (
	"context"
	"testing"
)

// StopInstances stops what baton launched on both colours, even with
// NoStop, forgets it in the state, and leaves an address it launched
// nothing on alone.
func TestStopInstancesStopsWhatBatonLaunched(t *testing.T) {
	blue := newHealthApp(t, 200)
	green := newLazyApp(t)
	f := newFixture(t, blue.addr(), green.addr, Config{NoStop: true})
	f.sw.SetLauncher(&fakeLauncher{})
	pb, pg := newFakeProcess(100, "v1"), newFakeProcess(200, "v2")
	f.sw.remember(Blue, pb)
	f.sw.remember(Green, pg)
	if err := f.sw.save(); err != nil {
		t.Fatal(err)
	}
	var steps []string
	n, err := f.sw.StopInstances(context.Background(), func(e Event) { steps = append(steps, e.Step+": "+e.Message) })
	if err != nil || n != 2 {
		t.Fatalf("StopInstances = %d, %v; want 2 stopped\n%q", n, err, steps)
	}
	if pb.stopped() != 1 || pg.stopped() != 1 || len(f.stopper.stopped()) != 0 {
		t.Errorf("stopped blue %d, green %d times, by port %v; want each once through its launcher", pb.stopped(), pg.stopped(), f.stopper.stopped())
	}
	if st, _ := f.store.Load(); len(st.Instances) != 0 {
		t.Errorf("the state still has instances %+v", st.Instances)
	}
	// Again: nothing left, nothing stopped, and no address killed.
	if n, err := f.sw.StopInstances(context.Background(), nil); err != nil || n != 0 || len(f.stopper.stopped()) != 0 {
		t.Errorf("second StopInstances = %d, %v, by port %v; want 0 and nothing", n, err, f.stopper.stopped())
	}
}
