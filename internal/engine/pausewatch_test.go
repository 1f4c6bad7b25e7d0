package engine

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A gap longer than the threshold between two marks, on the monotonic or
// the wall clock, starts one new epoch, whoever marks first; shorter gaps
// do not.
func TestPauseWatch(t *testing.T) {
	w := NewPauseWatch(500 * time.Millisecond)
	var mono time.Duration
	wall := w.start.UnixNano()
	w.clock = func() (time.Duration, int64) { return mono, wall }
	step := func(d time.Duration) uint64 {
		mono += d
		wall += int64(d)
		return w.Mark()
	}
	if e := step(100 * time.Millisecond); e != 0 {
		t.Fatalf("epoch %d after 100ms", e)
	}
	if e := step(400 * time.Millisecond); e != 0 {
		t.Fatalf("epoch %d after a 400ms gap", e)
	}
	if e := step(15 * time.Second); e != 1 || w.Gap() != 15*time.Second {
		t.Fatalf("epoch %d gap %v after a 15s pause, want 1, 15s", e, w.Gap())
	}
	if e := step(100 * time.Millisecond); e != 1 {
		t.Fatalf("epoch %d: the pause counted twice", e)
	}
	// a suspended VM: the monotonic clock stood still, the wall clock did not
	mono += 100 * time.Millisecond
	wall += int64(30 * time.Second)
	if e := w.Mark(); e != 2 {
		t.Fatalf("epoch %d after a wall-clock jump of 30s, want 2", e)
	}

	// Many shard actors mark at once on waking: one new epoch.
	w2 := NewPauseWatch(500 * time.Millisecond)
	w2.clock = func() (time.Duration, int64) { return 10 * time.Second, w2.start.UnixNano() + int64(10*time.Second) }
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() { defer wg.Done(); w2.Mark() }()
	}
	wg.Wait()
	if e := w2.epoch.Load(); e != 1 {
		t.Fatalf("epoch %d after 16 concurrent marks of one pause, want 1", e)
	}
}

// NewEpoch starts an epoch at once, as a pause seen would (Gap 0, the
// reason kept); every new epoch, either way, is told to the subscribers
// until they cancel. A nil watch sees nothing and tells nobody.
func TestPauseWatchNewEpochAndSubscribers(t *testing.T) {
	w := NewPauseWatch(500 * time.Millisecond)
	var mono time.Duration
	wall := w.start.UnixNano()
	w.clock = func() (time.Duration, int64) { return mono, wall }
	var told atomic.Int32
	cancel := w.Subscribe(func() { told.Add(1) })

	mono += 15 * time.Second
	wall += int64(15 * time.Second)
	if e := w.Mark(); e != 1 || told.Load() != 1 || w.Reason() != "" || w.Gap() != 15*time.Second {
		t.Fatalf("after a pause: epoch %d, told %d times, reason %q, gap %v", e, told.Load(), w.Reason(), w.Gap())
	}
	if e := w.NewEpoch("declared dead by node-2"); e != 2 || w.Mark() != 2 || told.Load() != 2 {
		t.Fatalf("NewEpoch: epoch %d, told %d times", e, told.Load())
	}
	if w.Gap() != 0 || w.Reason() != "declared dead by node-2" {
		t.Fatalf("after NewEpoch: gap %v, reason %q", w.Gap(), w.Reason())
	}
	cancel()
	w.NewEpoch("again")
	if told.Load() != 2 {
		t.Fatalf("told %d times after cancel", told.Load())
	}

	var none *PauseWatch
	none.Subscribe(func() { t.Error("a nil watch told someone") })()
	if none.Mark() != 0 || none.NewEpoch("x") != 0 || none.Gap() != 0 || none.Reason() != "" {
		t.Fatal("a nil watch saw something")
	}
}
