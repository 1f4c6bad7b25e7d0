package chaos

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/ledger"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
)

var t0 = time.UnixMilli(1_700_000_000_000)

func ent(node, shard string, ts int64, pk string, n int) ledger.Entry {
	return ledger.Entry{Node: node, Shard: shard, TS: t0.UnixMilli() + ts, PK: pk,
		Data: fmt.Appendf(nil, `{"pk":%q,"n":%d}`, pk, n)}
}

func TestVerifyClean(t *testing.T) {
	es := []ledger.Entry{ent("n1", "s0", 10, "a", 1), ent("n1", "s0", 20, "a", 2), ent("n2", "s1", 15, "b", 1)}
	r := Verify(Input{Entries: es, Produced: map[string]int{"a": 2, "b": 1}})
	if !r.OK || r.Lost != 0 || r.Duplicates != 0 || !r.OrderOK || r.Processed != 3 || r.Produced != 3 {
		t.Fatalf("clean ledgers: %+v", r)
	}
}

func TestVerifyFindsLostRecord(t *testing.T) {
	es := []ledger.Entry{ent("n1", "s0", 10, "a", 1), ent("n1", "s0", 30, "a", 3)}
	r := Verify(Input{Entries: es, Produced: map[string]int{"a": 3}})
	if r.OK || r.Lost != 1 || !reflect.DeepEqual(r.LostSamples, []string{"a/2"}) {
		t.Fatalf("want a/2 lost: lost %d %v ok %v", r.Lost, r.LostSamples, r.OK)
	}
	if len(r.Failures) != 1 {
		t.Fatalf("failures %v", r.Failures)
	}
}

func TestVerifyFindsReorderedKey(t *testing.T) {
	// a/2 first processed (on the child shard) before a/1 (on the parent).
	es := []ledger.Entry{ent("n2", "child", 10, "a", 2), ent("n1", "parent", 20, "a", 1), ent("n1", "parent", 20, "b", 1)}
	r := Verify(Input{Entries: es, Produced: map[string]int{"a": 2, "b": 1}})
	if r.OK || r.OrderOK || r.OrderViolations != 1 || r.Lost != 0 {
		t.Fatalf("want one order violation: %+v", r)
	}
}

func TestVerifyCountsAndAttributesDuplicates(t *testing.T) {
	kill := t0.Add(100 * time.Millisecond)
	part := t0.Add(200 * time.Millisecond)
	stop := t0.Add(300 * time.Millisecond)
	faults := []Done{
		{Kind: Kill, At: kill, Detail: "n1"},
		{Kind: Partition, At: part, End: part.Add(50 * time.Millisecond)},
		{Kind: Stop, At: stop, Detail: "n2"},
	}
	events := []clusterrun.Event{{Kind: clusterrun.EventKill, Node: "n1", At: kill}, {Kind: clusterrun.EventTerm, Node: "n2", At: stop}}
	es := []ledger.Entry{
		ent("n1", "s0", 10, "a", 1), ent("n1", "s0", 10, "a", 2),
		ent("n1", "s0", 20, "a", 1),                                // repeat before any fault: none
		ent("n3", "s0", 150, "a", 1), ent("n3", "s0", 150, "a", 2), // after the kill: 2
		ent("n3", "s0", 160, "a", 2),                              // again: 3rd processing, kill
		ent("n2", "s1", 50, "b", 1), ent("n3", "s1", 250, "b", 1), // after the partition
		ent("n2", "s2", 60, "c", 1),  // no duplicate after the stop
		ent("n4", "s2", 380, "c", 2), // 80 ms after the stop: the longest idle
	}
	r := Verify(Input{Entries: es, Produced: map[string]int{"a": 2, "b": 1, "c": 2}, Events: events, Faults: faults})
	if r.Duplicates != 5 {
		t.Fatalf("duplicates %d, want 5", r.Duplicates)
	}
	want := map[string]int{"none": 1, "kill": 3, "partition": 1}
	if !reflect.DeepEqual(r.DupByFault, want) {
		t.Fatalf("by fault %v, want %v", r.DupByFault, want)
	}
	if !r.OK || r.Lost != 0 || r.Processed != 5 {
		t.Fatalf("%+v", r)
	}
	if r.Kills != 1 || r.Stops != 1 || r.KillIdle.N != 1 || r.KillIdle.Max != 0.05 || r.StopIdle.N != 1 || r.StopIdle.Max != 0.08 {
		t.Fatalf("idle: kills %d %+v stops %d %+v", r.Kills, r.KillIdle, r.Stops, r.StopIdle)
	}
	if r.KillDelay != r.KillIdle || r.StopDelay != r.StopIdle {
		t.Fatalf("delays %+v %+v without write times, want the idle times", r.KillDelay, r.StopDelay)
	}
	// c/2 was written 10 ms before n4 processed it: a 10 ms delay.
	w := Verify(Input{Entries: es, Produced: map[string]int{"a": 2, "b": 1, "c": 2}, Events: events, Faults: faults,
		Written: map[string][]int64{"c": {t0.UnixMilli(), t0.UnixMilli() + 370}}})
	if w.StopDelay.Max != 0.01 || w.StopIdle.Max != 0.08 {
		t.Fatalf("stop delay %+v idle %+v, want 0.01 and 0.08", w.StopDelay, w.StopIdle)
	}
	if r.IdleN != 2 || r.IdleMax != 0.08 {
		t.Fatalf("idle overall n=%d max=%v", r.IdleN, r.IdleMax)
	}
	if !strings.HasPrefix(r.LongestIdle, "s2 idle 0.080s after the stop of n2") || !strings.HasSuffix(r.LongestIdle, "then processed by n4") {
		t.Fatalf("longest idle %q", r.LongestIdle)
	}
}

func cp(seq string) lease.Checkpoint { return lease.Checkpoint{SequenceNumber: seq} }

func TestVerifyFindsBackwardsCheckpoint(t *testing.T) {
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	samples := []Sample{
		{At: at(0), Shard: "s0", Counter: 1, Checkpoint: cp(lease.CheckpointTrimHorizon)},
		{At: at(1), Shard: "s0", Counter: 2, Checkpoint: cp("9")},
		{At: at(2), Shard: "s0", Counter: 3, Checkpoint: cp("10")}, // numeric, not lexical: forward
		{At: at(3), Shard: "s0", Counter: 4, Checkpoint: cp(lease.CheckpointShardEnd)},
		{At: at(1), Shard: "s1", Counter: 5, Checkpoint: cp("49590000000000000000000000000000000000000000000000000000")},
		{At: at(2), Shard: "s1", Counter: 5, Checkpoint: cp("1")},  // counter did not move: not counted
		{At: at(3), Shard: "s1", Counter: 7, Checkpoint: cp("49")}, // backwards from "1"? no: forward
		{At: at(4), Shard: "s1", Counter: 8, Checkpoint: cp("48")}, // backwards
		{At: at(5), Shard: "s1", Counter: 9, Checkpoint: lease.Checkpoint{SequenceNumber: "48", SubSequenceNumber: 3}},
		{At: at(6), Shard: "s1", Counter: 10, Checkpoint: lease.Checkpoint{SequenceNumber: "48", SubSequenceNumber: 1}}, // backwards
	}
	b := CheckSamples(samples)
	if len(b) != 2 || b[0].Shard != "s1" || b[0].From != "49" || b[0].To != "48" || b[1].From != "48/3" || b[1].To != "48/1" {
		t.Fatalf("backwards %v", b)
	}
	r := Verify(Input{Entries: []ledger.Entry{ent("n1", "s0", 1, "a", 1)}, Produced: map[string]int{"a": 1}, Samples: samples})
	if r.OK || r.CheckpointsBackward != 2 || len(r.Failures) != 1 {
		t.Fatalf("%+v", r)
	}
}

func TestScheduleDeterministic(t *testing.T) {
	s := Scenario{Nodes: 5, Duration: Duration(3 * time.Minute), Mix: Kinds}
	a, b := Schedule(7, s), Schedule(7, s)
	if len(a) == 0 || !reflect.DeepEqual(a, b) {
		t.Fatalf("schedules differ or empty:\n%v\n%v", a, b)
	}
	if c := Schedule(8, s); reflect.DeepEqual(a, c) {
		t.Fatalf("seeds 7 and 8 give the same schedule %v", a)
	}
	down := 0
	for i, f := range a {
		if i > 0 && f.At < a[i-1].At {
			t.Fatalf("not in time order: %v", a)
		}
		switch f.Kind {
		case Kill, Stop:
			down++
		case Restart:
			down--
		}
		if down < 0 || 5-down < 2 {
			t.Fatalf("schedule takes too many nodes down or restarts none: %v", a)
		}
	}
}
