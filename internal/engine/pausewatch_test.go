package engine

import (
	"sync"
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
