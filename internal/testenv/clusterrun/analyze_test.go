package clusterrun

import (
	"fmt"
	"testing"
	"time"

	"github.com/kinactor/kinactor/internal/ledger"
)

func entry(node, shard string, ts int64, pk string, n int) ledger.Entry {
	return ledger.Entry{Node: node, Shard: shard, Seq: fmt.Sprint(ts), TS: ts, PK: pk,
		Data: fmt.Appendf(nil, `{"pk":%q,"n":%d}`, pk, n)}
}

func TestAnalyze(t *testing.T) {
	t0 := time.UnixMilli(10_000)
	events := []Event{
		{Kind: EventStart, Node: "n1", At: t0},
		{Kind: EventKill, Node: "n1", At: t0.Add(time.Second)},      // 11000
		{Kind: EventTerm, Node: "n2", At: t0.Add(3 * time.Second)},  // 13000
		{Kind: EventStart, Node: "n3", At: t0.Add(4 * time.Second)}, // 14000
		{Kind: EventKill, Node: "n3", At: t0.Add(10 * time.Second)}, // 20000: no data after
		{Kind: EventTerm, Node: "n9", At: t0.Add(-5 * time.Second)}, // before everything
	}
	es := []ledger.Entry{
		// shard A: n1 until the kill, then n2 re-processes k0/2 and goes on.
		entry("n1", "A", 10_100, "k0", 1),
		entry("n1", "A", 10_900, "k0", 2),
		entry("n2", "A", 12_300, "k0", 2), // duplicate after the kill; idle 1.3s
		entry("n2", "A", 12_300, "k0", 3),
		// n2 leaves at 13000; n3 takes A at 13200 (idle 0.2s).
		entry("n2", "A", 13_050, "k0", 4),
		entry("n3", "A", 13_200, "k0", 5),
		// shard B: n2 throughout until its term; k1/3 processed before k1/2.
		entry("n2", "B", 10_200, "k1", 1),
		entry("n2", "B", 12_000, "k1", 3),
		entry("n2", "B", 12_100, "k1", 2),
		entry("n3", "B", 13_500, "k1", 4), // idle 0.5s
		entry("n3", "B", 13_600, "k1", 4), // duplicate after the term
		// garbage
		{Node: "n2", Shard: "B", Seq: "x", TS: 12_000, Data: []byte(`"x"`)},
		entry("n2", "B", 12_000, "k1", 99), // not produced
	}
	produced := map[string]int{"k0": 6, "k1": 4} // k0/6 lost
	r := Analyze(es, produced, events)
	t.Log(r.String())
	check := func(what string, got, want any) {
		t.Helper()
		if got != want {
			t.Errorf("%s = %v, want %v", what, got, want)
		}
	}
	check("Produced", r.Produced, 10)
	check("Processed", r.Processed, 9)
	check("Lost", r.Lost, 1)
	check("LostSamples", fmt.Sprint(r.LostSamples), "[k0/6]")
	check("Unexpected", r.Unexpected, 1)
	check("Unparsed", r.Unparsed, 1)
	check("Duplicates", r.Duplicates, 2)
	check("DupAfterKills", r.DupAfterKills, 1)
	check("DupAfterTerms", r.DupAfterTerms, 1)
	check("DupByEvent", fmt.Sprint(r.DupByEvent), "[0 1 1 0 0 0]")
	check("DupByLastEvent", fmt.Sprint(r.DupByLastEvent), "map[kill:1 term:1]")
	check("OrderViolations", r.OrderViolations, 1)
	check("Kills", r.Kills, 2)
	check("Terms", r.Terms, 2)
	check("moves", len(r.Moves), 3)
	check("KillIdle", r.KillIdle, Stats{N: 1, P50: 1300 * time.Millisecond, P99: 1300 * time.Millisecond, Max: 1300 * time.Millisecond})
	check("TermIdle", r.TermIdle, Stats{N: 2, P50: 200 * time.Millisecond, P99: 500 * time.Millisecond, Max: 500 * time.Millisecond})
	check("MaxIdle", r.MaxIdle, 1300*time.Millisecond)
	check("EventsWithoutMove", r.EventsWithoutMove, 2)
	check("KillDelay without write times", r.KillDelay, r.KillIdle)
	// n1 processed A at 2 records in 0.9 s before its kill; one came again.
	check("KillDups", fmt.Sprint(r.KillDups), "[1]")
	check("KillDupTime", r.KillDupTime.P50, 450*time.Millisecond)
	if r.OK() {
		t.Error("OK with a lost record")
	}

	// With write times: k0/5 was written after n2's term, so the time
	// before it counts as waiting for a record, not as a delay; k0/2 and
	// k1/4 were written before their events and waited the whole idle.
	written := map[string][]int64{"k0": {10_000, 10_800, 12_200, 12_900, 13_100, 13_300}, "k1": {10_000, 11_000, 11_500, 12_900}}
	w := AnalyzeWritten(es, produced, events, written)
	check("KillIdle with write times", w.KillIdle, r.KillIdle)
	check("KillDelay", w.KillDelay, Stats{N: 1, P50: 1300 * time.Millisecond, P99: 1300 * time.Millisecond, Max: 1300 * time.Millisecond})
	check("TermDelay", w.TermDelay, Stats{N: 2, P50: 100 * time.Millisecond, P99: 500 * time.Millisecond, Max: 500 * time.Millisecond})
}

// A pause is a stop like a kill: the paused node's shards move, and what
// it delivers after it wakes counts as the pause's duplicates.
func TestAnalyzePause(t *testing.T) {
	events := []Event{
		{Kind: EventStart, Node: "n1", At: time.UnixMilli(9_000)},
		{Kind: EventStart, Node: "n2", At: time.UnixMilli(9_000)},
		{Kind: EventPause, Node: "n1", At: time.UnixMilli(20_000)},
		{Kind: EventResume, Node: "n1", At: time.UnixMilli(40_000)},
	}
	var es []ledger.Entry
	for i := 1; i <= 10; i++ { // one record a second on A, by n1
		es = append(es, entry("n1", "A", int64(9_000+1000*i), "k0", i))
	}
	es = append(es,
		entry("n2", "A", 21_300, "k0", 10), // the new owner resumes one record early
		entry("n2", "A", 21_300, "k0", 11),
		entry("n1", "A", 40_010, "k0", 11), // the woken node's batch in flight
	)
	r := Analyze(es, map[string]int{"k0": 11}, events)
	t.Log(r.String())
	if r.Pauses != 1 || r.DupAfterPauses != 2 || r.DupAfterKills != 0 || r.DupUnattributed != 0 {
		t.Errorf("pauses %d, duplicates after pauses %d, after kills %d, unattributed %d; want 1, 2, 0, 0", r.Pauses, r.DupAfterPauses, r.DupAfterKills, r.DupUnattributed)
	}
	if len(r.Moves) != 1 || r.Moves[0].Kind != EventPause || r.Moves[0].To != "n2" || r.Moves[0].Idle != 1300*time.Millisecond {
		t.Errorf("moves %+v, want A from n1 to n2 after the pause, idle 1.3s", r.Moves)
	}
	if fmt.Sprint(r.PauseDups) != "[2]" || r.PauseDupTime.P50 != 2*time.Second || r.PauseIdle.N != 1 {
		t.Errorf("pause duplicates %v (%v of records), idle %v; want [2] (2s), n=1", r.PauseDups, r.PauseDupTime.P50, r.PauseIdle)
	}
}

func TestAnalyzeSameMillisecondOtherNode(t *testing.T) {
	// Two nodes appending in the same millisecond cannot be ordered.
	es := []ledger.Entry{entry("n1", "A", 5, "k0", 2), entry("n2", "A", 5, "k0", 1)}
	r := Analyze(es, map[string]int{"k0": 2}, nil)
	if !r.OK() || r.OrderViolations != 0 || r.Duplicates != 0 {
		t.Fatalf("%+v", r)
	}
}

func TestStats(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	s := statsOf(ds)
	if s.N != 100 || s.P50 != 50*time.Millisecond || s.P99 != 99*time.Millisecond || s.Max != 100*time.Millisecond {
		t.Fatalf("%+v", s)
	}
	if (statsOf(nil) != Stats{}) {
		t.Fatal("stats of nothing")
	}
}
