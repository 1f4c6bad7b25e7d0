package clusterrun

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/kinactor/kinactor/internal/ledger"
)

// Move is one shard the victim of a kill, term or pause processed last
// before the event, how long the shard went without processing afterwards,
// and what the move cost in duplicates.
type Move struct {
	Event int // index in the events given to Analyze
	Kind  EventKind
	From  string // the victim
	To    string // the node that processed the shard first after the event
	Shard string
	// Idle is the first ledger ts of the shard by another node after the
	// event, minus the event's time.
	Idle time.Duration
	// Delay is how long that first record waited because of the move: its
	// ledger ts minus the later of the event and the record's write (Idle
	// when write times are unknown). At low rates most of Idle is waiting
	// for the next record to be written; Delay leaves that out.
	Delay time.Duration
	// Dups counts the shard's records processed again after the event (and
	// before the next kill, term or pause); DupTime is that many records in
	// time at the shard's rate over the 10 s before the event (0 without
	// records then): "the last DupTime of the shard was replayed".
	Dups    int
	DupTime time.Duration
}

// Stats summarizes durations.
type Stats struct {
	N             int
	P50, P99, Max time.Duration
}

func (s Stats) String() string {
	if s.N == 0 {
		return "n=0"
	}
	return fmt.Sprintf("n=%d p50=%.3fs p99=%.3fs max=%.3fs", s.N, s.P50.Seconds(), s.P99.Seconds(), s.Max.Seconds())
}

func statsOf(ds []time.Duration) Stats {
	if len(ds) == 0 {
		return Stats{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := func(p float64) time.Duration { // nearest rank
		i := int(math.Ceil(p*float64(len(s)))) - 1
		return s[max(0, min(i, len(s)-1))]
	}
	return Stats{N: len(s), P50: rank(0.50), P99: rank(0.99), Max: s[len(s)-1]}
}

// Report is what Analyze finds.
type Report struct {
	Produced  int // records produced (sum over keys)
	Processed int // distinct (pk, n) produced that are in some ledger
	Lines     int // ledger lines
	Lost      int // produced, in no ledger
	// LostSamples lists up to 20 lost records as "pk/n".
	LostSamples []string
	// Unexpected counts distinct (pk, n) in the ledgers that were not
	// produced (n beyond the key's count), Unparsed the lines whose data is
	// not {"pk":..,"n":..}.
	Unexpected, Unparsed int

	// Duplicates counts processings beyond the first, in total and
	// attributed to the nearest kill or term at or before each repeat
	// processing (DupByEvent is parallel to the events; Unattributed has
	// no kill or term before it).
	Duplicates      int
	DupByEvent      []int
	DupAfterKills   int
	DupAfterTerms   int
	DupAfterPauses  int // includes what the paused node delivered after it woke
	DupUnattributed int
	// DupByLastEvent attributes each repeat processing to the nearest
	// event of any kind at or before it (start, kill or term; "" when
	// none), which tells a kill's duplicates from those of the rebalance
	// when a replacement starts.
	DupByLastEvent  map[EventKind]int
	OrderViolations int
	OrderSamples    []string // up to 20
	Moves           []Move
	KillIdle        Stats
	TermIdle        Stats
	PauseIdle       Stats
	// KillDupTime and PauseDupTime summarize Move.DupTime over the moves
	// after kills and after pauses; KillDups and PauseDups list Move.Dups.
	KillDupTime, PauseDupTime Stats
	KillDups, PauseDups       []int
	KillDelay                 Stats // Move.Delay after kills
	TermDelay                 Stats // Move.Delay after terms
	Kills, Terms              int
	Pauses                    int
	MaxIdle                   time.Duration // the longest Idle of any move
	MaxIdleShard              string
	EventsWithoutMove         int // kills and terms after which no shard of the victim had data
}

// OK reports whether nothing was lost and the per-key order held.
func (r Report) OK() bool { return r.Lost == 0 && r.OrderViolations == 0 }

// String is a multi-line summary.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "produced %d, processed %d distinct (%d ledger lines), lost %d, duplicates %d (after kills %d, after graceful stops %d, after pauses %d, other %d), order violations %d\n",
		r.Produced, r.Processed, r.Lines, r.Lost, r.Duplicates, r.DupAfterKills, r.DupAfterTerms, r.DupAfterPauses, r.DupUnattributed, r.OrderViolations)
	fmt.Fprintf(&b, "idle after kill (%d kills): %s\n", r.Kills, r.KillIdle)
	fmt.Fprintf(&b, "idle after graceful stop (%d stops): %s\n", r.Terms, r.TermIdle)
	if r.Pauses > 0 {
		fmt.Fprintf(&b, "idle after pause (%d pauses): %s\n", r.Pauses, r.PauseIdle)
	}
	if len(r.KillDups) > 0 {
		fmt.Fprintf(&b, "duplicates per shard moved by a kill: median %d (%.2fs of its records), max %d\n", MedianInt(r.KillDups), r.KillDupTime.P50.Seconds(), slices.Max(r.KillDups))
	}
	if len(r.PauseDups) > 0 {
		fmt.Fprintf(&b, "duplicates per shard moved by a pause: median %d (%.2fs of its records), max %d\n", MedianInt(r.PauseDups), r.PauseDupTime.P50.Seconds(), slices.Max(r.PauseDups))
	}
	if len(r.LostSamples) > 0 {
		fmt.Fprintf(&b, "lost (sample): %s\n", strings.Join(r.LostSamples, " "))
	}
	if len(r.OrderSamples) > 0 {
		fmt.Fprintf(&b, "order violations (sample): %s\n", strings.Join(r.OrderSamples, "; "))
	}
	if r.Unexpected > 0 || r.Unparsed > 0 {
		fmt.Fprintf(&b, "unexpected records %d, unparsable lines %d\n", r.Unexpected, r.Unparsed)
	}
	return b.String()
}

type recKey struct {
	pk string
	n  int
}

type item struct {
	idx int
	e   *ledger.Entry
	key recKey
}

// Analyze compares the ledgers with what was produced (per key, n from 1 to
// produced[pk]) and the kills and terms among events. Records are
// identified by (pk, n) parsed from the data {"pk":"k7","n":12}.
func Analyze(entries []ledger.Entry, produced map[string]int, events []Event) Report {
	return AnalyzeWritten(entries, produced, events, nil)
}

// AnalyzeWritten is Analyze with the records' write times (Producer.Written:
// per key, index n-1, Unix ms), which give each move its Delay.
func AnalyzeWritten(entries []ledger.Entry, produced map[string]int, events []Event, written map[string][]int64) Report {
	r := Report{Lines: len(entries), DupByEvent: make([]int, len(events)), DupByLastEvent: map[EventKind]int{}}
	for _, n := range produced {
		r.Produced += n
	}
	items := make([]item, 0, len(entries))
	for i := range entries {
		e := &entries[i]
		var d struct {
			PK *string `json:"pk"`
			N  *int    `json:"n"`
		}
		if json.Unmarshal(e.Data, &d) != nil || d.PK == nil || d.N == nil {
			r.Unparsed++
			continue
		}
		items = append(items, item{idx: i, e: e, key: recKey{*d.PK, *d.N}})
	}
	// Processing order: ts, then file order (within a node, append order).
	sort.SliceStable(items, func(i, j int) bool { return items[i].e.TS < items[j].e.TS })

	// The kills and terms, by time, for attributing duplicates.
	type stop struct {
		i  int
		at int64
	}
	var stops []stop
	for i, ev := range events {
		switch ev.Kind {
		case EventKill:
			r.Kills++
		case EventTerm:
			r.Terms++
		case EventPause:
			r.Pauses++
		default:
			continue
		}
		stops = append(stops, stop{i, ev.At.UnixMilli()})
	}
	sort.SliceStable(stops, func(i, j int) bool { return stops[i].at < stops[j].at })
	all := make([]stop, len(events))
	for i, ev := range events {
		all[i] = stop{i, ev.At.UnixMilli()}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].at < all[j].at })

	seen := map[recKey]int{}
	firsts := map[string][]item{}     // pk → first processings in processing order
	dupAt := map[int]map[string]int{} // stop's event index → shard → duplicates
	firstTS := map[string][]int64{}   // shard → ts of its records' first processings
	for _, it := range items {
		seen[it.key]++
		if seen[it.key] == 1 {
			firstTS[it.e.Shard] = append(firstTS[it.e.Shard], it.e.TS)
			if it.key.n >= 1 && it.key.n <= produced[it.key.pk] {
				firsts[it.key.pk] = append(firsts[it.key.pk], it)
			}
			continue
		}
		r.Duplicates++
		if j := sort.Search(len(all), func(j int) bool { return all[j].at > it.e.TS }) - 1; j >= 0 {
			r.DupByLastEvent[events[all[j].i].Kind]++
		} else {
			r.DupByLastEvent[""]++
		}
		j := sort.Search(len(stops), func(j int) bool { return stops[j].at > it.e.TS }) - 1
		if j < 0 {
			r.DupUnattributed++
			continue
		}
		r.DupByEvent[stops[j].i]++
		if dupAt[stops[j].i] == nil {
			dupAt[stops[j].i] = map[string]int{}
		}
		dupAt[stops[j].i][it.e.Shard]++
		switch events[stops[j].i].Kind {
		case EventKill:
			r.DupAfterKills++
		case EventTerm:
			r.DupAfterTerms++
		case EventPause:
			r.DupAfterPauses++
		}
	}
	for k := range seen {
		if k.n < 1 || k.n > produced[k.pk] {
			r.Unexpected++
		} else {
			r.Processed++
		}
	}
	var pks []string
	for pk := range produced {
		pks = append(pks, pk)
	}
	sort.Strings(pks)
	for _, pk := range pks {
		for n := 1; n <= produced[pk]; n++ {
			if seen[recKey{pk, n}] == 0 {
				r.Lost++
				if len(r.LostSamples) < 20 {
					r.LostSamples = append(r.LostSamples, fmt.Sprintf("%s/%d", pk, n))
				}
			}
		}
	}

	// Per key, the first processing of n must come after that of every
	// smaller n (of the records produced). Two nodes appending in the same millisecond cannot be
	// ordered; such pairs are not counted.
	for _, pk := range slices.Sorted(maps.Keys(firsts)) {
		var top *item
		for i := range firsts[pk] {
			it := &firsts[pk][i]
			if top == nil || it.key.n > top.key.n {
				top = it
				continue
			}
			if it.e.TS == top.e.TS && it.e.Node != top.e.Node {
				continue
			}
			r.OrderViolations++
			if len(r.OrderSamples) < 20 {
				r.OrderSamples = append(r.OrderSamples, fmt.Sprintf("%s: n=%d first processed by %s at %d after n=%d by %s at %d",
					pk, it.key.n, it.e.Node, it.e.TS, top.key.n, top.e.Node, top.e.TS))
			}
		}
	}

	// Idle time per shard the victim processed last before each kill/term.
	byShard := map[string][]*ledger.Entry{}
	for i := range entries {
		e := &entries[i]
		byShard[e.Shard] = append(byShard[e.Shard], e)
	}
	for _, es := range byShard {
		sort.SliceStable(es, func(i, j int) bool { return es[i].TS < es[j].TS })
	}
	shards := slices.Sorted(maps.Keys(byShard))
	var killIdle, termIdle, pauseIdle, killDelay, termDelay, killDup, pauseDup []time.Duration
	for _, st := range stops {
		ev := events[st.i]
		moved := false
		for _, s := range shards {
			es := byShard[s]
			after := sort.Search(len(es), func(i int) bool { return es[i].TS > st.at })
			if after == 0 || es[after-1].Node != ev.Node {
				continue // the victim did not process this shard last
			}
			for _, e := range es[after:] {
				if e.Node == ev.Node {
					continue
				}
				m := Move{Event: st.i, Kind: ev.Kind, From: ev.Node, To: e.Node, Shard: s,
					Idle: time.Duration(e.TS-st.at) * time.Millisecond}
				m.Delay = m.Idle
				if at, ok := writtenAt(written, e); ok && at > st.at {
					m.Delay = time.Duration(max(0, e.TS-at)) * time.Millisecond
				}
				m.Dups = dupAt[st.i][s]
				if rate := rateBefore(firstTS[s], st.at); rate > 0 {
					m.DupTime = time.Duration(math.Round(float64(m.Dups)/rate*1000)) * time.Millisecond
				}
				r.Moves = append(r.Moves, m)
				moved = true
				switch ev.Kind {
				case EventKill:
					killIdle = append(killIdle, m.Idle)
					killDelay = append(killDelay, m.Delay)
					killDup = append(killDup, m.DupTime)
					r.KillDups = append(r.KillDups, m.Dups)
				case EventTerm:
					termIdle = append(termIdle, m.Idle)
					termDelay = append(termDelay, m.Delay)
				case EventPause:
					pauseIdle = append(pauseIdle, m.Idle)
					pauseDup = append(pauseDup, m.DupTime)
					r.PauseDups = append(r.PauseDups, m.Dups)
				}
				if m.Idle > r.MaxIdle {
					r.MaxIdle, r.MaxIdleShard = m.Idle, s
				}
				break
			}
		}
		if !moved {
			r.EventsWithoutMove++
		}
	}
	r.KillIdle, r.TermIdle, r.PauseIdle = statsOf(killIdle), statsOf(termIdle), statsOf(pauseIdle)
	r.KillDupTime, r.PauseDupTime = statsOf(killDup), statsOf(pauseDup)
	r.KillDelay, r.TermDelay = statsOf(killDelay), statsOf(termDelay)
	return r
}

// rateBefore is the records per second of a shard over the 10 s before at
// (or since its first record, if later), from the sorted ts of its records'
// first processings; 0 without records then.
func rateBefore(ts []int64, at int64) float64 {
	if len(ts) == 0 || ts[0] >= at {
		return 0
	}
	from := max(at-10_000, ts[0])
	lo := sort.Search(len(ts), func(i int) bool { return ts[i] >= from })
	hi := sort.Search(len(ts), func(i int) bool { return ts[i] >= at })
	if hi-lo == 0 || at == from {
		return 0
	}
	return float64(hi-lo) / (float64(at-from) / 1000)
}

// MedianInt is the median (lower middle) of ns; 0 for none.
func MedianInt(ns []int) int {
	if len(ns) == 0 {
		return 0
	}
	s := slices.Clone(ns)
	slices.Sort(s)
	return s[(len(s)-1)/2]
}

// writtenAt looks up when the ledger entry's record was written.
func writtenAt(written map[string][]int64, e *ledger.Entry) (int64, bool) {
	var d struct {
		PK string `json:"pk"`
		N  int    `json:"n"`
	}
	if written == nil || json.Unmarshal(e.Data, &d) != nil {
		return 0, false
	}
	ts := written[d.PK]
	if d.N < 1 || d.N > len(ts) {
		return 0, false
	}
	return ts[d.N-1], true
}
