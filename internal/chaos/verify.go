package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kinactor/kinactor/internal/clusterrun"
	"github.com/kinactor/kinactor/internal/ledger"
	"github.com/kinactor/kinactor/lease"
)

// Done is a fault as it was done: when, to whom, and what happened.
type Done struct {
	Kind   Kind      `json:"kind"`
	At     time.Time `json:"at"`
	End    time.Time `json:"end,omitzero"` // timed faults: when healed or cleared
	Detail string    `json:"detail"`       // victim, groups, shards
	Err    string    `json:"error,omitempty"`
}

// Sample is one lease row as the sampler read it.
type Sample struct {
	At         time.Time
	Shard      string
	Owner      string
	Counter    int64
	Checkpoint lease.Checkpoint
}

// Backwards is a checkpoint that moved backwards while the lease counter
// moved forward.
type Backwards struct {
	Shard            string
	From, To         string // checkpoints "seq/sub"
	FromCtr, ToCtr   int64
	FromOwn, ToOwner string
	At               time.Time
}

func (b Backwards) String() string {
	return fmt.Sprintf("%s: %s (counter %d, %s) -> %s (counter %d, %s) at %s",
		b.Shard, b.From, b.FromCtr, b.FromOwn, b.To, b.ToCtr, b.ToOwner, b.At.Format("15:04:05.000"))
}

// cpRank orders checkpoints: sentinels before sequence numbers, SHARD_END
// after every sequence number.
func cmpCheckpoint(a, b lease.Checkpoint) int {
	rank := func(c lease.Checkpoint) int {
		switch {
		case c.IsShardEnd():
			return 2
		case c.IsSentinel():
			return 0
		}
		return 1
	}
	ra, rb := rank(a), rank(b)
	if ra != rb || ra != 1 {
		return ra - rb
	}
	x, ok1 := new(big.Int).SetString(a.SequenceNumber, 10)
	y, ok2 := new(big.Int).SetString(b.SequenceNumber, 10)
	if !ok1 || !ok2 {
		return strings.Compare(a.SequenceNumber, b.SequenceNumber)
	}
	if c := x.Cmp(y); c != 0 {
		return c
	}
	switch {
	case a.SubSequenceNumber < b.SubSequenceNumber:
		return -1
	case a.SubSequenceNumber > b.SubSequenceNumber:
		return 1
	}
	return 0
}

func cpString(c lease.Checkpoint) string {
	if c.SubSequenceNumber != 0 {
		return fmt.Sprintf("%s/%d", c.SequenceNumber, c.SubSequenceNumber)
	}
	if c.SequenceNumber == "" {
		return "-"
	}
	return c.SequenceNumber
}

// CheckSamples returns every place where a shard's checkpoint moved
// backwards between two consecutive samples while its lease counter moved
// forward (samples in time order; sentinels sort first, SHARD_END last).
func CheckSamples(samples []Sample) []Backwards {
	last := map[string]Sample{}
	var out []Backwards
	for _, s := range samples {
		p, ok := last[s.Shard]
		last[s.Shard] = s
		if !ok || s.Counter <= p.Counter {
			continue
		}
		if cmpCheckpoint(s.Checkpoint, p.Checkpoint) < 0 {
			out = append(out, Backwards{Shard: s.Shard, From: cpString(p.Checkpoint), To: cpString(s.Checkpoint),
				FromCtr: p.Counter, ToCtr: s.Counter, FromOwn: p.Owner, ToOwner: s.Owner, At: s.At})
		}
	}
	return out
}

// Report is what a chaos run found. The JSON field names are stable.
type Report struct {
	Nodes       int     `json:"nodes"`
	Shards      int     `json:"shards"`
	Seed        uint64  `json:"seed"`
	DurationSec float64 `json:"duration_s"`
	// Start is when the producer started; fault times are relative to it
	// in the table.
	Start time.Time `json:"start"`

	Produced  int `json:"produced"`
	Processed int `json:"processed"` // distinct records processed at least once
	Lost      int `json:"lost"`
	// LostSamples lists up to 20 lost records as "pk/n".
	LostSamples []string `json:"lost_samples,omitempty"`

	Duplicates int `json:"duplicates"`
	// DupByFault attributes each repeat processing to the kind of the
	// nearest fault at or before it ("none" when no fault came before).
	DupByFault map[string]int `json:"duplicates_by_fault"`

	OrderOK         bool     `json:"order_ok"`
	OrderViolations int      `json:"order_violations"`
	OrderSamples    []string `json:"order_samples,omitempty"`

	CheckpointSamples   int      `json:"checkpoint_samples"`
	CheckpointsBackward int      `json:"checkpoints_backwards"`
	BackwardSamples     []string `json:"backwards_samples,omitempty"`

	// Idle is over every shard moved after a kill or a stop: how long it
	// went without processing.
	IdleN    int     `json:"idle_n"`
	IdleP50  float64 `json:"idle_p50_s"`
	IdleP99  float64 `json:"idle_p99_s"`
	IdleMax  float64 `json:"idle_max_s"`
	KillIdle Stats   `json:"idle_after_kill"`
	StopIdle Stats   `json:"idle_after_stop"`
	// KillDelay and StopDelay leave out of the idle time the wait for the
	// next record to be written: how long the first record the new owner
	// processed waited because of the move (clusterrun.Move.Delay). At a
	// low rate, idle is mostly that wait.
	KillDelay Stats `json:"delay_after_kill"`
	StopDelay Stats `json:"delay_after_stop"`
	// LongestIdle names the worst move: the shard, the fault and who
	// took the shard over ("" when nothing moved).
	LongestIdle string `json:"idle_longest,omitempty"`
	Kills       int    `json:"kills"`
	Stops       int    `json:"stops"`
	Unexpected  int    `json:"unexpected"` // processed records never produced, or unparsable lines

	LeaseWrites      float64 `json:"lease_writes"`
	LeaseWritesPerSH float64 `json:"lease_writes_per_shard_hour"`

	Faults []Done            `json:"faults"`
	Proxy  map[string]string `json:"proxy,omitempty"` // what each fault proxy did

	Failures []string `json:"failures,omitempty"`
	OK       bool     `json:"ok"`
}

// Stats summarizes idle durations in seconds.
type Stats struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50_s"`
	P99 float64 `json:"p99_s"`
	Max float64 `json:"max_s"`
}

func toStats(s clusterrun.Stats) Stats {
	return Stats{s.N, s.P50.Seconds(), s.P99.Seconds(), s.Max.Seconds()}
}

// Verify compares the ledgers' entries with what was produced (per key,
// n from 1 to produced[pk]), attributes duplicates to the faults done,
// measures idle time after the kills and stops among events (from
// clusterrun), and checks the lease-table samples. written (the producer's
// write times, may be nil) gives the delays.
func Verify(entries []ledger.Entry, produced map[string]int, events []clusterrun.Event, faults []Done, samples []Sample, written map[string][]int64) Report {
	a := clusterrun.AnalyzeWritten(entries, produced, events, written)
	r := Report{
		Produced: a.Produced, Processed: a.Processed, Lost: a.Lost, LostSamples: a.LostSamples,
		Duplicates: a.Duplicates, OrderViolations: a.OrderViolations, OrderSamples: a.OrderSamples,
		OrderOK: a.OrderViolations == 0, KillIdle: toStats(a.KillIdle), StopIdle: toStats(a.TermIdle),
		KillDelay: toStats(a.KillDelay), StopDelay: toStats(a.TermDelay),
		Kills: a.Kills, Stops: a.Terms, Unexpected: a.Unexpected + a.Unparsed,
		Faults: faults, CheckpointSamples: len(samples),
	}
	var idle []time.Duration
	var worst *clusterrun.Move
	for i, m := range a.Moves {
		idle = append(idle, m.Idle)
		if worst == nil || m.Idle > worst.Idle {
			worst = &a.Moves[i]
		}
	}
	if worst != nil {
		r.LongestIdle = fmt.Sprintf("%s idle %.3fs after the %s of %s at %s, then processed by %s",
			worst.Shard, worst.Idle.Seconds(), map[clusterrun.EventKind]string{clusterrun.EventKill: "kill", clusterrun.EventTerm: "stop"}[worst.Kind], worst.From, events[worst.Event].At.UTC().Format("15:04:05.000"), worst.To)
	}
	if len(idle) > 0 {
		sort.Slice(idle, func(i, j int) bool { return idle[i] < idle[j] })
		rank := func(p float64) time.Duration {
			i := int(float64(len(idle))*p+0.999999) - 1
			return idle[max(0, min(i, len(idle)-1))]
		}
		r.IdleN, r.IdleP50, r.IdleP99, r.IdleMax = len(idle), rank(0.5).Seconds(), rank(0.99).Seconds(), idle[len(idle)-1].Seconds()
	}
	r.DupByFault = attribute(entries, faults)
	for _, b := range CheckSamples(samples) {
		r.CheckpointsBackward++
		if len(r.BackwardSamples) < 20 {
			r.BackwardSamples = append(r.BackwardSamples, b.String())
		}
	}
	if r.Lost > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d records lost (e.g. %s)", r.Lost, strings.Join(r.LostSamples, " ")))
	}
	if !r.OrderOK {
		r.Failures = append(r.Failures, fmt.Sprintf("%d per-key order violations", r.OrderViolations))
	}
	if r.CheckpointsBackward > 0 {
		r.Failures = append(r.Failures, fmt.Sprintf("%d checkpoints moved backwards", r.CheckpointsBackward))
	}
	r.OK = len(r.Failures) == 0
	return r
}

// attribute counts the repeat processings of every (pk, n) by the kind of
// the nearest fault at or before each repeat, in the order Analyze uses
// (ledger ts, then file order).
func attribute(entries []ledger.Entry, faults []Done) map[string]int {
	type rec struct {
		pk string
		n  int
	}
	idx := make([]int, 0, len(entries))
	keys := make([]rec, len(entries))
	for i, e := range entries {
		var d struct {
			PK *string `json:"pk"`
			N  *int    `json:"n"`
		}
		if json.Unmarshal(e.Data, &d) != nil || d.PK == nil || d.N == nil {
			continue
		}
		keys[i] = rec{*d.PK, *d.N}
		idx = append(idx, i)
	}
	sort.SliceStable(idx, func(i, j int) bool { return entries[idx[i]].TS < entries[idx[j]].TS })
	fs := append([]Done(nil), faults...)
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].At.Before(fs[j].At) })
	by := map[string]int{}
	seen := map[rec]bool{}
	for _, i := range idx {
		if !seen[keys[i]] {
			seen[keys[i]] = true
			continue
		}
		ts := entries[i].TS
		j := sort.Search(len(fs), func(j int) bool { return fs[j].At.UnixMilli() > ts }) - 1
		if j < 0 {
			by["none"]++
		} else {
			by[string(fs[j].Kind)]++
		}
	}
	return by
}

// WriteTable prints the report for people.
func (r Report) WriteTable(w io.Writer) {
	status := "PASS"
	if !r.OK {
		status = "FAIL: " + strings.Join(r.Failures, "; ")
	}
	fmt.Fprintf(w, "chaos: %d nodes, %d shards, seed %d, %.0fs: %s\n\n", r.Nodes, r.Shards, r.Seed, r.DurationSec, status)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "at (s)\tfault\tdetail")
	t0 := r.Start
	if t0.IsZero() && len(r.Faults) > 0 {
		t0 = r.Faults[0].At
	}
	for _, f := range r.Faults {
		d := f.Detail
		if !f.End.IsZero() {
			d += fmt.Sprintf(" (%.1fs)", f.End.Sub(f.At).Seconds())
		}
		if f.Err != "" {
			d += " ERROR: " + f.Err
		}
		fmt.Fprintf(tw, "%.1f\t%s\t%s\n", f.At.Sub(t0).Seconds(), f.Kind, d)
	}
	_ = tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "records produced\t%d\t\n", r.Produced)
	fmt.Fprintf(tw, "processed at least once\t%d\t\n", r.Processed)
	fmt.Fprintf(tw, "lost\t%d\t%s\n", r.Lost, strings.Join(r.LostSamples, " "))
	var by []string
	for _, k := range sortedKeys(r.DupByFault) {
		by = append(by, fmt.Sprintf("%s %d", k, r.DupByFault[k]))
	}
	fmt.Fprintf(tw, "duplicates\t%d\t%s\n", r.Duplicates, strings.Join(by, ", "))
	fmt.Fprintf(tw, "per-key order held\t%v\t%d violations\n", r.OrderOK, r.OrderViolations)
	fmt.Fprintf(tw, "checkpoints moved backwards\t%d\tin %d samples\n", r.CheckpointsBackward, r.CheckpointSamples)
	fmt.Fprintf(tw, "idle after kill (s)\tn=%d\tp50 %.3f  p99 %.3f  max %.3f\n", r.KillIdle.N, r.KillIdle.P50, r.KillIdle.P99, r.KillIdle.Max)
	fmt.Fprintf(tw, "idle after stop (s)\tn=%d\tp50 %.3f  p99 %.3f  max %.3f\n", r.StopIdle.N, r.StopIdle.P50, r.StopIdle.P99, r.StopIdle.Max)
	fmt.Fprintf(tw, "record delay after kill (s)\tn=%d\tp50 %.3f  p99 %.3f  max %.3f\n", r.KillDelay.N, r.KillDelay.P50, r.KillDelay.P99, r.KillDelay.Max)
	fmt.Fprintf(tw, "record delay after stop (s)\tn=%d\tp50 %.3f  p99 %.3f  max %.3f\n", r.StopDelay.N, r.StopDelay.P50, r.StopDelay.P99, r.StopDelay.Max)
	if r.LongestIdle != "" {
		fmt.Fprintf(tw, "longest idle\t\t%s\n", r.LongestIdle)
	}
	fmt.Fprintf(tw, "lease writes per shard-hour\t%.0f\t(%.0f writes)\n", r.LeaseWritesPerSH, r.LeaseWrites)
	if r.Unexpected > 0 {
		fmt.Fprintf(tw, "unexpected or unparsable ledger lines\t%d\t\n", r.Unexpected)
	}
	_ = tw.Flush()
	for _, k := range sortedKeys(r.Proxy) {
		fmt.Fprintf(w, "%s proxy: %s\n", k, r.Proxy[k])
	}
	for _, s := range r.OrderSamples {
		fmt.Fprintf(w, "order: %s\n", s)
	}
	for _, s := range r.BackwardSamples {
		fmt.Fprintf(w, "backwards: %s\n", s)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
