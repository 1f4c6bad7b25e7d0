package chaos

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kinactor/kinactor/internal/ledger"
)

func ms(d int64) time.Time { return t0.Add(time.Duration(d) * time.Millisecond) }

// written gives write times (ms after t0) per key, n from 1.
func written(m map[string][]int64) map[string][]int64 {
	out := map[string][]int64{}
	for k, v := range m {
		for _, x := range v {
			out[k] = append(out[k], t0.UnixMilli()+x)
		}
	}
	return out
}

func TestStalls(t *testing.T) {
	es := []ledger.Entry{
		// s0: a/1..a/3 flow, then a/4 and a/5 (written at 1000 and 1100)
		// wait until 5000: a 4 s stall from 1000.
		ent("n1", "s0", 50, "a", 1), ent("n1", "s0", 150, "a", 2), ent("n1", "s0", 250, "a", 3),
		ent("n2", "s0", 5000, "a", 4), ent("n2", "s0", 5000, "a", 5),
		// s1: b/2 (written at 3000) is never processed: open until the end.
		ent("n1", "s1", 100, "b", 1),
		// s2: two keys processed out of write order within the shard.
		ent("n1", "s2", 1200, "x", 1), ent("n1", "s2", 1300, "y", 1),
	}
	w := written(map[string][]int64{"a": {0, 100, 200, 1000, 1100}, "b": {0, 3000}, "c": {4000}, "x": {1000}, "y": {900}})
	produced := map[string]int{"a": 5, "b": 2, "c": 1, "x": 1, "y": 1}
	got := map[string][]float64{}
	for _, s := range findStalls(es, produced, w, t0.UnixMilli()+6000) {
		got[s.Shard] = append(got[s.Shard], s.Seconds)
		if s.Open != (s.Shard == "s1" && s.Seconds == 3 || strings.HasPrefix(s.Shard, "unknown")) {
			t.Errorf("stall %+v: open %v", s, s.Open)
		}
	}
	want := map[string][]float64{
		"s0":                    {0.05, 0.05, 0.05, 4},
		"s1":                    {0.1, 3},   // b/1's delay; b/2 from 3000 until the end at 6000
		"s2":                    {0.3, 0.1}, // y (written at 900) waits until 1300
		"unknown shard (key c)": {2},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("stalls %v, want %v", got, want)
	}

	// Attribution: the latest fault at or before start + StallGrace. The
	// cut began 1.9 s after s0's stall did: the stall is the cut's. The
	// small stalls at the start are laid to the kill 0.5 s later, the
	// one from 900 ms (y) to the cut.
	faults := []Done{
		{Kind: Kill, At: ms(500), Detail: "n9 (1 shards)"},
		{Kind: Cut, At: ms(2900), End: ms(4800), Detail: "n1's dynamodb", Node: "n1", Target: "dynamodb"},
	}
	r := Verify(Input{Entries: es, Produced: produced, Faults: faults, Written: w, End: ms(6000), MaxStall: 3500 * time.Millisecond})
	if r.LongestStall == nil || r.LongestStall.Shard != "s0" || r.LongestStallSec != 4 || r.LongestStall.Fault != "cut" ||
		!r.LongestStall.Start.Equal(ms(1000)) || !r.LongestStall.End.Equal(ms(5000)) {
		t.Fatalf("longest stall %+v", r.LongestStall)
	}
	if len(r.StallByFault) != 2 || r.StallByFault["cut"].Seconds != 4 || r.StallByFault["kill"].Seconds != 0.1 {
		t.Fatalf("by fault %+v", r.StallByFault)
	}
	if r.StallsOverMax != 1 || r.MaxStallSec != 3.5 || r.OK || len(r.StallSamples) != 1 || !strings.HasPrefix(r.StallSamples[0], "s0 4.000s from") {
		t.Fatalf("over max %d, max %v, ok %v", r.StallsOverMax, r.MaxStallSec, r.OK)
	}
	if !slices.ContainsFunc(r.Failures, func(f string) bool {
		return strings.HasPrefix(f, "1 stalls longer than max_stall 3.5s, the longest s0 4.000s") && strings.Contains(f, "after the cut")
	}) {
		t.Fatalf("failures %q", r.Failures)
	}
	// A cut beginning later than the grace is not the stall's cause.
	faults[1].At = ms(3100)
	r = Verify(Input{Entries: es, Produced: produced, Faults: faults, Written: w, End: ms(6000)})
	if r.LongestStall.Fault != "kill" || r.StallsOverMax != 0 {
		t.Fatalf("longest stall %+v, over %d (no max)", r.LongestStall, r.StallsOverMax)
	}
	if len(r.Impairs) != 1 || r.Impairs[0].StallSec != 3 {
		t.Fatalf("impairs %+v: want the cut's longest stall (b/2's 3 s)", r.Impairs)
	}
	var b strings.Builder
	r.WriteTable(&b)
	for _, want := range []string{"longest stall (s)", "4.000  s0 4.000s from", "longest stall by fault (s)", "cut 3.000, kill 4.000", "stalls over max_stall", "cut dynamodb"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestStallsWithoutWriteTimes(t *testing.T) {
	r := Verify(Input{Entries: []ledger.Entry{ent("n1", "s0", 10, "a", 1)}, Produced: map[string]int{"a": 1}, MaxStall: time.Second})
	if r.LongestStall != nil || !r.OK {
		t.Fatalf("stall measured without write times: %+v", r)
	}
}

// A node cut off from DynamoDB delivers nothing later than LeaseExpiry
// after its last write known to succeed, until its next one.
func TestCutDeliveriesAfterLeaseExpiry(t *testing.T) {
	faults := []Done{{Kind: Cut, At: ms(2500), End: ms(20000), Node: "n1", Target: "both", Shards: []string{"s0", "s1"}}}
	writes := map[string][]Write{"n1": {
		{At: ms(1000), Shard: "s0"}, {At: ms(2000), Shard: "s1"}, {At: ms(21000), Shard: "s0", Take: true},
	}}
	es := []ledger.Entry{
		ent("n1", "s0", 100, "a", 1),
		ent("n1", "s0", 10000, "a", 2),  // within 9 s of the last good write (2000)
		ent("n1", "s0", 12000, "a", 3),  // late
		ent("n2", "s0", 14000, "a", 4),  // s0 moved 11.5 s after the cut began
		ent("n1", "s1", 20500, "b", 1),  // late: the cut is over, but no write succeeded yet
		ent("n1", "s0", 21500, "a", 5),  // after a good write: fine
		ent("n2", "s1", 30000, "b", 2),  // after the cut ended: s1 did not move during it
		ent("n1", "s9", 1000, "z", 1),   // another shard, before the cut
		ent("n3", "s0", 15000, "a", 99), // unexpected record, ignored here
	}
	in := Input{Entries: es, Produced: map[string]int{"a": 5, "b": 2, "z": 1}, Faults: faults, Writes: writes, LeaseExpiry: 9 * time.Second}
	r := Verify(in)
	if len(r.Impairs) != 1 {
		t.Fatalf("impairs %+v", r.Impairs)
	}
	im := r.Impairs[0]
	if im.Late != 2 || r.CutLate != 2 || !im.LastWrite.Equal(ms(2000)) || !im.NextWrite.Equal(ms(21000)) {
		t.Fatalf("late %d (%v), last %v next %v", im.Late, im.LateSamples, im.LastWrite, im.NextWrite)
	}
	if !reflect.DeepEqual(im.Moved, map[string]float64{"s0": 11.5}) || !slices.Equal(im.NotMoved, []string{"s1"}) || im.RecoverySec != 11.5 {
		t.Fatalf("moved %v, not moved %v, recovery %v", im.Moved, im.NotMoved, im.RecoverySec)
	}
	if r.OK || !slices.ContainsFunc(r.Failures, func(f string) bool { return strings.HasPrefix(f, "cut of n1's DynamoDB: 2 records delivered later") }) {
		t.Fatalf("failures %q", r.Failures)
	}
	// A Kinesis cut has no such check; without write logs neither has a
	// DynamoDB cut.
	in.Faults = []Done{{Kind: Cut, At: ms(2500), End: ms(20000), Node: "n1", Target: "kinesis", Shards: []string{"s0"}}}
	if r := Verify(in); r.CutLate != 0 || !r.Impairs[0].LastWrite.IsZero() {
		t.Fatalf("kinesis cut checked for late deliveries: %+v", r.Impairs)
	}
	in.Faults, in.Writes = faults, nil
	if r := Verify(in); r.CutLate != 0 {
		t.Fatalf("checked without write logs: %+v", r.Impairs)
	}
}

// A woken paused node delivers at most its in-flight batch on each shard
// another node took, and checkpoints none of them, until it takes the shard
// again.
func TestPauseAfterWaking(t *testing.T) {
	faults := []Done{{Kind: Pause, At: ms(1000), End: ms(21000), Node: "n1", Shards: []string{"s0", "s1", "s2"}}}
	samples := []Sample{
		{At: ms(500), Shard: "s0", Owner: "n1", Counter: 5}, {At: ms(500), Shard: "s1", Owner: "n1", Counter: 5}, {At: ms(500), Shard: "s2", Owner: "n1", Counter: 5},
		{At: ms(3000), Shard: "s0", Owner: "n2", Counter: 6}, {At: ms(3000), Shard: "s1", Owner: "n1", Counter: 5}, {At: ms(3000), Shard: "s2", Owner: "n3", Counter: 6},
		{At: ms(30000), Shard: "s2", Owner: "n1", Counter: 8},
	}
	writes := map[string][]Write{"n1": {
		{At: ms(900), Shard: "s0", Checkpoint: true},   // before the pause
		{At: ms(21300), Shard: "s0", Checkpoint: true}, // on a lost shard: wrong
		{At: ms(21300), Shard: "s1", Checkpoint: true}, // s1 was never taken: fine
		{At: ms(29000), Shard: "s2", Take: true},
		{At: ms(29600), Shard: "s2", Checkpoint: true}, // after taking it again: fine
	}}
	es := []ledger.Entry{
		ent("n1", "s0", 900, "a", 1),
		ent("n2", "s0", 3500, "a", 1), ent("n2", "s0", 3500, "a", 2),
		ent("n1", "s0", 21100, "a", 1), ent("n1", "s0", 21100, "a", 2), // the batch in flight
		ent("n1", "s0", 21200, "a", 3), // a second batch: wrong
		ent("n1", "s1", 21100, "b", 1),
		ent("n3", "s2", 2500, "c", 1),
		ent("n1", "s2", 21100, "c", 1),
		ent("n1", "s2", 29500, "c", 2), // after taking it again
	}
	r := Verify(Input{Entries: es, Produced: map[string]int{"a": 3, "b": 1, "c": 2}, Faults: faults, Samples: samples, Writes: writes})
	if len(r.Impairs) != 1 {
		t.Fatalf("impairs %+v", r.Impairs)
	}
	im := r.Impairs[0]
	if !slices.Equal(im.Lost, []string{"s0", "s2"}) ||
		!reflect.DeepEqual(im.WokeBatches, map[string]int{"s0": 2, "s2": 1}) ||
		!reflect.DeepEqual(im.WokeRecords, map[string]int{"s0": 3, "s2": 1}) ||
		!reflect.DeepEqual(im.WokeCheckpoints, map[string]int{"s0": 1, "s2": 0}) {
		t.Fatalf("lost %v batches %v records %v checkpoints %v", im.Lost, im.WokeBatches, im.WokeRecords, im.WokeCheckpoints)
	}
	if r.PauseExtraBatches != 1 || r.PauseCheckpoints != 1 || r.OK || len(r.Failures) != 2 {
		t.Fatalf("extra %d checkpoints %d failures %q", r.PauseExtraBatches, r.PauseCheckpoints, r.Failures)
	}
	if !reflect.DeepEqual(im.Moved, map[string]float64{"s0": 2.5, "s2": 1.5}) || !slices.Equal(im.NotMoved, []string{"s1"}) {
		t.Fatalf("moved %v not moved %v", im.Moved, im.NotMoved)
	}
	// The repeats after the pause began are the pause's duplicates: n2
	// taking a/1 over, and a/1, a/2 and c/1 again after waking.
	if r.Duplicates != 4 || !reflect.DeepEqual(r.DupByFault, map[string]int{"pause": 4}) {
		t.Fatalf("duplicates %d by fault %v", r.Duplicates, r.DupByFault)
	}
	if !reflect.DeepEqual(r.DupPerFault, map[string]float64{"pause": 4}) {
		t.Fatalf("duplicates per fault %v, want pause 4 (one pause)", r.DupPerFault)
	}
	var b strings.Builder
	r.WriteTable(&b)
	if !strings.Contains(b.String(), "2 shards lost; after waking 3 batches (4 records) and 1 checkpoints on them") {
		t.Fatalf("table:\n%s", b.String())
	}
}

func TestNewKindsAttributeDuplicates(t *testing.T) {
	var faults []Done
	var es []ledger.Entry
	for i, k := range []Kind{Cut, Pause, Hang, Ambiguous} {
		at := int64(1000 * (i + 1))
		faults = append(faults, Done{Kind: k, At: ms(at), End: ms(at + 500)})
		es = append(es, ent("n1", "s0", at-10, string(k), 1), ent("n2", "s0", at+10, string(k), 1))
	}
	r := Verify(Input{Entries: es, Produced: map[string]int{"cut": 1, "pause": 1, "hang": 1, "ambiguous": 1}, Faults: faults})
	if want := map[string]int{"cut": 1, "pause": 1, "hang": 1, "ambiguous": 1}; !reflect.DeepEqual(r.DupByFault, want) {
		t.Fatalf("by fault %v, want %v", r.DupByFault, want)
	}
}
