package engine

import (
	"math"
	"testing"
	"time"
)

func TestBoardSampleLoad(t *testing.T) {
	b := NewBoard()
	l := b.add("shardId-000000000001")
	t0 := time.Unix(1000, 0)
	b.Sample(t0) // starts the clock
	if v := b.Shards()[0]; v.Load.Measured {
		t.Fatalf("measured after the first sample: %+v", v.Load)
	}
	// The first interval (the shard's start: a backlog read at once) is
	// not its load.
	l.read(5000, 8<<20)
	l.worked(4 * time.Second)
	t0 = t0.Add(5 * time.Second)
	b.Sample(t0)
	if v := b.Shards()[0]; v.Load.Measured {
		t.Fatalf("measured from the start-up interval: %+v", v.Load)
	}
	l.read(500, 1<<20)
	l.worked(2500 * time.Millisecond)
	b.Sample(t0.Add(5 * time.Second))
	got := b.Shards()[0].Load
	want := Load{RecordsPerSec: 100, BytesPerSec: (1 << 20) / 5.0, Busy: 0.5, Measured: true, weight: (1<<20)/5.0/ShardReadLimit + 0.5}
	if got != want {
		t.Fatalf("first interval: got %+v, want %+v", got, want)
	}
	// An idle interval of one half-life halves every average.
	b.Sample(t0.Add(5*time.Second + LoadHalfLife))
	got = b.Shards()[0].Load
	for name, pair := range map[string][2]float64{
		"records": {got.RecordsPerSec, want.RecordsPerSec / 2},
		"bytes":   {got.BytesPerSec, want.BytesPerSec / 2},
		"busy":    {got.Busy, want.Busy / 2},
	} {
		if math.Abs(pair[0]-pair[1]) > 1e-9*math.Max(1, pair[1]) {
			t.Errorf("%s after an idle half-life: %v, want %v", name, pair[0], pair[1])
		}
	}
	// The weight balancing uses is averaged over WeightHalfLife: after an
	// idle LoadHalfLife it keeps 2^(-LoadHalfLife/WeightHalfLife) of itself.
	if w, keep := got.Weight(), want.weight*math.Exp2(-LoadHalfLife.Seconds()/WeightHalfLife.Seconds()); math.Abs(w-keep) > 1e-9 {
		t.Errorf("weight after an idle half-life: %v, want %v", w, keep)
	}
	if w := weightOf(ShardReadLimit, 0.25); w != 1.25 {
		t.Errorf("Weight: %v, want 1.25", w)
	}
}

func TestTrimMoves(t *testing.T) {
	c := &coordinator{}
	now := time.Now()
	c.moves = append(c.moves, Move{At: now.Add(-MovesFor - time.Second), Shard: "old"})
	for i := 0; i < MovesKept+5; i++ {
		c.moves = append(c.moves, Move{At: now, Shard: "new"})
	}
	c.trimMoves(now)
	if len(c.moves) != MovesKept {
		t.Fatalf("kept %d moves, want %d", len(c.moves), MovesKept)
	}
	for _, m := range c.moves {
		if m.Shard == "old" {
			t.Fatal("a move older than MovesFor was kept")
		}
	}
}
