package chaos

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/ledger"
	"github.com/kinactor/kinactor/internal/testenv/clusterrun"
)

// Done is a fault as it was done: when, to whom, and what happened.
type Done struct {
	Kind   Kind      `json:"kind"`
	At     time.Time `json:"at"`
	End    time.Time `json:"end,omitzero"` // timed faults: when healed, cleared or resumed
	Detail string    `json:"detail"`       // victim, groups, shards
	// Node is the victim of kill, stop, cut, pause and hang (and of an
	// ambiguous fault limited to one node); Shards the shards it owned
	// when the fault began (cut, pause, hang); Target what a cut cut
	// (kinesis, dynamodb, both).
	Node   string   `json:"node,omitempty"`
	Shards []string `json:"shards,omitempty"`
	Target string   `json:"target,omitempty"`
	Err    string   `json:"error,omitempty"`
	// Problem is what the fault's own check found wrong (a stranger that
	// did not really run, a view still split after a refusal); it fails
	// the run.
	Problem string `json:"problem,omitempty"`
	// Refused: messages our nodes refused during a stranger fault
	// (kinactor_gossip_refused_total); Healed: seconds after a refusal
	// ended until every view was whole again.
	Refused float64 `json:"refused,omitempty"`
	Healed  float64 `json:"healed_s,omitempty"`
}

// Write is a lease-table write of one node whose success reached it: the
// node's DynamoDB proxy passed a 2xx answer on (faultproxy.Write).
type Write struct {
	At    time.Time
	Shard string // the lease key
	// Take: an UpdateItem that sets the owner (take or steal); Checkpoint:
	// one that sets the checkpoint and not the owner.
	Take, Checkpoint bool
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
		if s.Checkpoint.Compare(p.Checkpoint) < 0 {
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
	// DupPerFault is DupByFault divided by the number of faults of that
	// kind (duplicates per kill, per pause, ...).
	DupPerFault map[string]float64 `json:"duplicates_per_fault"`
	// KillMoveDups and PauseMoveDups: the duplicates of each shard that
	// moved after a kill or a pause (clusterrun.Move.Dups, DupTime).
	KillMoveDups  MoveDups `json:"duplicates_per_shard_moved_by_kill"`
	PauseMoveDups MoveDups `json:"duplicates_per_shard_moved_by_pause"`

	OrderOK         bool     `json:"order_ok"`
	OrderViolations int      `json:"order_violations"`
	OrderSamples    []string `json:"order_samples,omitempty"`

	CheckpointSamples   int      `json:"checkpoint_samples"`
	CheckpointsBackward int      `json:"checkpoints_backwards"`
	BackwardSamples     []string `json:"backwards_samples,omitempty"`

	// Idle is over every shard moved after a kill, a stop or a pause: how long it
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

	// MaxStall is the bound on any stall (Scenario.MaxStall); a longer
	// one fails the run.
	MaxStallSec float64 `json:"max_stall_s"`
	// LongestStall is the longest time records of one shard waited with
	// no node processing that shard (see Stall); StallByFault the longest
	// stall that began after each kind of fault ("none" before any).
	LongestStall    *Stall           `json:"stall_longest,omitempty"`
	LongestStallSec float64          `json:"longest_stall_s"`
	StallByFault    map[string]Stall `json:"stall_by_fault,omitempty"`
	StallsOverMax   int              `json:"stalls_over_max"`
	// StallSamples describes up to 10 of the longest stalls over
	// max_stall.
	StallSamples []string `json:"stall_samples,omitempty"`

	// Impairs has one entry per cut, pause and hang: how fast the
	// victim's shards moved, and the checks of that kind.
	Impairs []Impair `json:"impairs,omitempty"`
	// CutLate counts records delivered by nodes cut off from DynamoDB
	// later than LeaseExpiry after their last write known to succeed
	// (must be 0); PauseExtraBatches the batches beyond one that woken
	// paused nodes delivered on shards they had lost, PauseCheckpoints the
	// checkpoints they wrote on them (both must be 0).
	CutLate           int `json:"cut_late_deliveries"`
	PauseExtraBatches int `json:"pause_extra_batches"`
	PauseCheckpoints  int `json:"pause_checkpoints"`

	Faults []Done            `json:"faults"`
	Proxy  map[string]string `json:"proxy,omitempty"` // what the fault proxies did, by service

	// Maps: every running node's ownership-machine map sizes at the end of
	// the run, against the rows and members it holds; MapsOver counts the
	// maps larger than rows + members + MapSlack (must be 0).
	Maps     []NodeMaps `json:"ownership_maps,omitempty"`
	MapsOver int        `json:"ownership_maps_over"`

	Failures []string `json:"failures,omitempty"`
	OK       bool     `json:"ok"`
}

// NodeMaps is one node's ownership-machine map sizes (map name → entries)
// with the rows of its lease table copy and the members in its view, and
// the maps over the bound.
type NodeMaps struct {
	Node    string         `json:"node"`
	Rows    int            `json:"rows"`
	Members int            `json:"members"`
	Sizes   map[string]int `json:"sizes"`
	Over    []string       `json:"over,omitempty"`
}

// MapSlack is what a map may hold beyond rows + members: a few entries of
// members gone recently enough to be still needed.
const MapSlack = 8

// checkMaps fills Over and MapsOver and fails the run on a map over its
// bound.
func (r *Report) checkMaps() {
	for i := range r.Maps {
		nm := &r.Maps[i]
		bound := nm.Rows + nm.Members + MapSlack
		for _, k := range slices.Sorted(maps.Keys(nm.Sizes)) {
			if k != "leases" && nm.Sizes[k] > bound {
				nm.Over = append(nm.Over, fmt.Sprintf("%s=%d", k, nm.Sizes[k]))
			}
		}
		if len(nm.Over) > 0 {
			r.MapsOver += len(nm.Over)
			r.Failures = append(r.Failures, fmt.Sprintf("%s's ownership maps over rows %d + members %d + %d: %s",
				nm.Node, nm.Rows, nm.Members, MapSlack, strings.Join(nm.Over, " ")))
		}
	}
}

// MoveDups summarizes the duplicates per moved shard: how many moves, the
// median and largest count, and the same in seconds of the shard's records.
type MoveDups struct {
	Moves     int     `json:"moves"`
	Median    int     `json:"median"`
	Max       int     `json:"max"`
	MedianSec float64 `json:"median_s"`
	MaxSec    float64 `json:"max_s"`
}

func moveDups(counts []int, times clusterrun.Stats) MoveDups {
	if len(counts) == 0 {
		return MoveDups{}
	}
	return MoveDups{Moves: len(counts), Median: clusterrun.MedianInt(counts), Max: slices.Max(counts),
		MedianSec: times.P50.Seconds(), MaxSec: times.Max.Seconds()}
}

func (d MoveDups) String() string {
	if d.Moves == 0 {
		return "no moves"
	}
	return fmt.Sprintf("median %d (%.2fs of records), max %d (%.2fs), over %d shards moved", d.Median, d.MedianSec, d.Max, d.MaxSec, d.Moves)
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

// Input is what Verify reads.
type Input struct {
	Entries  []ledger.Entry     // every node's ledger
	Produced map[string]int     // records produced per key (n from 1)
	Events   []clusterrun.Event // starts, kills, terms, pauses, resumes
	Faults   []Done
	Samples  []Sample // the lease table, sampled in time order
	// Written is the producer's write times (clusterrun.Producer.Written;
	// nil: no delays and no stalls are measured).
	Written map[string][]int64
	// Writes is, per node, its lease-table writes known to succeed, in
	// order (nil: the cut and pause checks that need them are skipped).
	Writes map[string][]Write
	// End is the end of the run: records never processed stall until
	// then (zero: the latest processing or write seen).
	End time.Time
	// MaxStall bounds every stall; LeaseExpiry is the nodes' (0: not
	// checked).
	MaxStall, LeaseExpiry time.Duration
}

// Verify compares the ledgers' entries with what was produced (per key,
// n from 1 to produced[pk]), attributes duplicates to the faults done,
// measures idle time after the kills and stops among events (from
// clusterrun) and the stalls of every shard, checks the lease-table
// samples, and checks the cuts and pauses.
func Verify(in Input) Report {
	entries, produced, events, faults, samples, written := in.Entries, in.Produced, in.Events, in.Faults, in.Samples, in.Written
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
			worst.Shard, worst.Idle.Seconds(), map[clusterrun.EventKind]string{clusterrun.EventKill: "kill", clusterrun.EventTerm: "stop", clusterrun.EventPause: "pause"}[worst.Kind], worst.From, events[worst.Event].At.UTC().Format("15:04:05.000"), worst.To)
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
	nFaults := map[string]int{}
	for _, f := range faults {
		nFaults[string(f.Kind)]++
	}
	r.DupPerFault = map[string]float64{}
	for k, n := range nFaults {
		r.DupPerFault[k] = float64(r.DupByFault[k]) / float64(n)
	}
	r.KillMoveDups, r.PauseMoveDups = moveDups(a.KillDups, a.KillDupTime), moveDups(a.PauseDups, a.PauseDupTime)
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
	r.verifyImpairs(in, r.verifyStalls(in))
	for _, d := range faults {
		if d.Problem != "" {
			r.Failures = append(r.Failures, fmt.Sprintf("fault %s: %s", d.Kind, d.Problem))
		}
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
		if f.Problem != "" {
			d += " PROBLEM: " + f.Problem
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
	for _, k := range slices.Sorted(maps.Keys(r.DupByFault)) {
		by = append(by, fmt.Sprintf("%s %d", k, r.DupByFault[k]))
	}
	fmt.Fprintf(tw, "duplicates\t%d\t%s\n", r.Duplicates, strings.Join(by, ", "))
	var per []string
	for _, k := range slices.Sorted(maps.Keys(r.DupPerFault)) {
		per = append(per, fmt.Sprintf("%s %.1f", k, r.DupPerFault[k]))
	}
	if len(per) > 0 {
		fmt.Fprintf(tw, "duplicates per fault\t\t%s\n", strings.Join(per, ", "))
	}
	if r.KillMoveDups.Moves > 0 {
		fmt.Fprintf(tw, "duplicates per shard moved by a kill\t\t%s\n", r.KillMoveDups)
	}
	if r.PauseMoveDups.Moves > 0 {
		fmt.Fprintf(tw, "duplicates per shard moved by a pause\t\t%s\n", r.PauseMoveDups)
	}
	fmt.Fprintf(tw, "per-key order held\t%v\t%d violations\n", r.OrderOK, r.OrderViolations)
	fmt.Fprintf(tw, "checkpoints moved backwards\t%d\tin %d samples\n", r.CheckpointsBackward, r.CheckpointSamples)
	fmt.Fprintf(tw, "idle after kill (s)\tn=%d\tp50 %.3f  p99 %.3f  max %.3f\n", r.KillIdle.N, r.KillIdle.P50, r.KillIdle.P99, r.KillIdle.Max)
	fmt.Fprintf(tw, "idle after stop (s)\tn=%d\tp50 %.3f  p99 %.3f  max %.3f\n", r.StopIdle.N, r.StopIdle.P50, r.StopIdle.P99, r.StopIdle.Max)
	fmt.Fprintf(tw, "record delay after kill (s)\tn=%d\tp50 %.3f  p99 %.3f  max %.3f\n", r.KillDelay.N, r.KillDelay.P50, r.KillDelay.P99, r.KillDelay.Max)
	fmt.Fprintf(tw, "record delay after stop (s)\tn=%d\tp50 %.3f  p99 %.3f  max %.3f\n", r.StopDelay.N, r.StopDelay.P50, r.StopDelay.P99, r.StopDelay.Max)
	if r.LongestIdle != "" {
		fmt.Fprintf(tw, "longest idle\t\t%s\n", r.LongestIdle)
	}
	if r.LongestStall != nil {
		bound := ""
		if r.MaxStallSec > 0 {
			bound = fmt.Sprintf("max_stall %.1f; ", r.MaxStallSec)
		}
		fmt.Fprintf(tw, "longest stall (s)\t%.3f\t%s%s\n", r.LongestStallSec, bound, r.LongestStall)
		var by []string
		for _, k := range slices.Sorted(maps.Keys(r.StallByFault)) {
			by = append(by, fmt.Sprintf("%s %.3f", k, r.StallByFault[k].Seconds))
		}
		fmt.Fprintf(tw, "longest stall by fault (s)\t\t%s\n", strings.Join(by, ", "))
		fmt.Fprintf(tw, "stalls over max_stall\t%d\t\n", r.StallsOverMax)
	}
	if len(r.Impairs) > 0 {
		fmt.Fprintf(tw, "cut: late deliveries\t%d\t\n", r.CutLate)
		fmt.Fprintf(tw, "pause: extra batches, checkpoints\t%d, %d\t\n", r.PauseExtraBatches, r.PauseCheckpoints)
	}
	fmt.Fprintf(tw, "lease writes per shard-hour\t%.0f\t(%.0f writes)\n", r.LeaseWritesPerSH, r.LeaseWrites)
	if r.Unexpected > 0 {
		fmt.Fprintf(tw, "unexpected or unparsable ledger lines\t%d\t\n", r.Unexpected)
	}
	_ = tw.Flush()
	if len(r.Impairs) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "at (s)\timpairment\tnode\tshards\tmoved within (s)\tlongest stall (s)\tchecks")
		for _, im := range r.Impairs {
			moved := "-"
			if len(im.Moved) > 0 {
				moved = fmt.Sprintf("%.3f", im.RecoverySec)
			}
			if len(im.NotMoved) > 0 {
				moved += fmt.Sprintf(" (%d not moved)", len(im.NotMoved))
			}
			fmt.Fprintf(tw, "%.1f\t%s\t%s\t%d\t%s\t%.3f\t%s\n", im.At.Sub(t0).Seconds(), im.kindString(), im.Node, len(im.Shards), moved, im.StallSec, im.checks())
		}
		_ = tw.Flush()
	}
	if len(r.Maps) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "node\trows\tmembers\townership maps at the end (bound: rows + members + %d)\n", MapSlack)
		for _, nm := range r.Maps {
			var sz []string
			for _, k := range slices.Sorted(maps.Keys(nm.Sizes)) {
				if k != "leases" {
					sz = append(sz, fmt.Sprintf("%s %d", k, nm.Sizes[k]))
				}
			}
			over := ""
			if len(nm.Over) > 0 {
				over = "  OVER: " + strings.Join(nm.Over, " ")
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%s%s\n", nm.Node, nm.Rows, nm.Members, strings.Join(sz, ", "), over)
		}
		_ = tw.Flush()
	}
	for _, k := range slices.Sorted(maps.Keys(r.Proxy)) {
		fmt.Fprintf(w, "%s proxy: %s\n", k, r.Proxy[k])
	}
	for _, s := range r.OrderSamples {
		fmt.Fprintf(w, "order: %s\n", s)
	}
	for _, s := range r.BackwardSamples {
		fmt.Fprintf(w, "backwards: %s\n", s)
	}
	for _, s := range r.StallSamples {
		fmt.Fprintf(w, "stall over max_stall: %s\n", s)
	}
}

// Stall is a time that records of one shard waited in the stream while no
// node processed that shard. For consecutive processing times t1 < t2 of
// the shard (first processings of records, by any node), it runs from the
// later of t1 and the write of the oldest record written before t2 and not
// yet processed at t1, until t2. Records never processed stall until the
// end of the run (Open). A record's shard is the one it was first processed
// on (for a record never processed: that of the key's nearest processed
// record).
type Stall struct {
	Shard   string    `json:"shard"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Seconds float64   `json:"s"`
	Open    bool      `json:"open,omitempty"`
	// Fault is the kind of the latest fault that began no later than
	// StallGrace after Start ("none" when there is none); FaultAt and
	// FaultDetail are its time and detail.
	Fault       string    `json:"fault"`
	FaultAt     time.Time `json:"fault_at,omitzero"`
	FaultDetail string    `json:"fault_detail,omitempty"`
}

// StallGrace: a stall is laid to a fault that began up to this long after
// the stall did, because a shard's last processing before a fault comes up
// to a poll interval before the fault, and records written since then are
// already waiting when it begins.
const StallGrace = 2 * time.Second

func (s Stall) String() string {
	open := ""
	if s.Open {
		open = ", still waiting at the end"
	}
	after := "before any fault"
	if s.Fault != "none" {
		after = fmt.Sprintf("after the %s at %s (%s)", s.Fault, s.FaultAt.UTC().Format("15:04:05.000"), s.FaultDetail)
	}
	return fmt.Sprintf("%s %.3fs from %s to %s%s, %s", s.Shard, s.Seconds,
		s.Start.UTC().Format("15:04:05.000"), s.End.UTC().Format("15:04:05.000"), open, after)
}

type recKey struct {
	pk string
	n  int
}

func parseRec(e *ledger.Entry) (recKey, bool) {
	var d struct {
		PK *string `json:"pk"`
		N  *int    `json:"n"`
	}
	if json.Unmarshal(e.Data, &d) != nil || d.PK == nil || d.N == nil {
		return recKey{}, false
	}
	return recKey{*d.PK, *d.N}, true
}

// findStalls returns every stall of every shard (see Stall), without fault
// attribution. end is in Unix ms (0: the latest processing or write).
func findStalls(entries []ledger.Entry, produced map[string]int, written map[string][]int64, end int64) []Stall {
	type first struct {
		ts    int64
		shard string
	}
	firsts := map[recKey]first{}
	for i := range entries {
		e := &entries[i]
		k, ok := parseRec(e)
		if !ok {
			continue
		}
		if f, seen := firsts[k]; !seen || e.TS < f.ts {
			firsts[k] = first{e.TS, e.Shard}
		}
		end = max(end, e.TS)
	}
	processed := map[string][]int{} // pk → processed n, sorted
	for k := range firsts {
		processed[k.pk] = append(processed[k.pk], k.n)
	}
	for _, ns := range processed {
		sort.Ints(ns)
	}
	type rec struct{ w, f int64 } // write and first processing (MaxInt64: never)
	byShard := map[string][]rec{}
	for _, pk := range slices.Sorted(maps.Keys(produced)) {
		ws := written[pk]
		for n := 1; n <= produced[pk] && n <= len(ws); n++ {
			end = max(end, ws[n-1])
			if f, ok := firsts[recKey{pk, n}]; ok {
				byShard[f.shard] = append(byShard[f.shard], rec{ws[n-1], f.ts})
				continue
			}
			shard := "unknown shard (key " + pk + ")"
			if ns := processed[pk]; len(ns) > 0 {
				i := sort.SearchInts(ns, n)
				if i > 0 {
					i--
				}
				shard = firsts[recKey{pk, ns[i]}].shard
			}
			byShard[shard] = append(byShard[shard], rec{ws[n-1], math.MaxInt64})
		}
	}
	var out []Stall
	for _, shard := range slices.Sorted(maps.Keys(byShard)) {
		rs := byShard[shard]
		sort.SliceStable(rs, func(i, j int) bool { return rs[i].w < rs[j].w })
		var times []int64
		for _, r := range rs {
			if r.f != math.MaxInt64 {
				times = append(times, r.f)
			}
		}
		slices.Sort(times)
		times = slices.Compact(times)
		bounds := append(times, end)
		// waiting holds the records written so far in write order; those
		// before head were processed by prev. The first one not processed
		// is the oldest waiting record: records processed out of write
		// order stay until they reach the head, and are dropped then.
		var waiting []rec
		head, next := 0, 0
		prev := int64(math.MinInt64)
		for k, t := range bounds {
			for next < len(rs) && rs[next].w < t {
				waiting = append(waiting, rs[next])
				next++
			}
			for head < len(waiting) && waiting[head].f <= prev {
				head++
			}
			if head < len(waiting) {
				start := max(prev, waiting[head].w)
				if t > start {
					out = append(out, Stall{Shard: shard, Start: time.UnixMilli(start), End: time.UnixMilli(t),
						Seconds: float64(t-start) / 1000, Open: k == len(times)})
				}
			}
			prev = t
		}
	}
	return out
}

// faultBefore returns the index in faults of the latest fault that began at
// or before t (-1 if none).
func faultBefore(faults []Done, t time.Time) int {
	j := -1
	for i, f := range faults {
		if !f.At.After(t) && (j < 0 || !f.At.Before(faults[j].At)) {
			j = i
		}
	}
	return j
}

// verifyStalls measures the stalls and fails the run on one longer than
// MaxStall. It returns the longest stall laid to each fault (by index).
func (r *Report) verifyStalls(in Input) map[int]Stall {
	r.MaxStallSec = in.MaxStall.Seconds()
	if in.Written == nil {
		return nil
	}
	var end int64
	if !in.End.IsZero() {
		end = in.End.UnixMilli()
	}
	byFault := map[int]Stall{}
	var over []Stall
	for _, s := range findStalls(in.Entries, in.Produced, in.Written, end) {
		s.Fault = "none"
		j := faultBefore(in.Faults, s.Start.Add(StallGrace))
		if j >= 0 {
			f := in.Faults[j]
			s.Fault, s.FaultAt, s.FaultDetail = string(f.Kind), f.At, f.Detail
		}
		if r.LongestStall == nil || s.Seconds > r.LongestStall.Seconds {
			r.LongestStall = &s
		}
		if r.StallByFault == nil {
			r.StallByFault = map[string]Stall{}
		}
		if b, ok := r.StallByFault[s.Fault]; !ok || s.Seconds > b.Seconds {
			r.StallByFault[s.Fault] = s
		}
		if b, ok := byFault[j]; !ok || s.Seconds > b.Seconds {
			byFault[j] = s
		}
		if in.MaxStall > 0 && s.Seconds > in.MaxStall.Seconds() {
			over = append(over, s)
		}
	}
	if r.LongestStall != nil {
		r.LongestStallSec = r.LongestStall.Seconds
	}
	r.StallsOverMax = len(over)
	if len(over) > 0 {
		sort.SliceStable(over, func(i, j int) bool { return over[i].Seconds > over[j].Seconds })
		for _, s := range over[:min(10, len(over))] {
			r.StallSamples = append(r.StallSamples, s.String())
		}
		r.Failures = append(r.Failures, fmt.Sprintf("%d stalls longer than max_stall %s, the longest %s", len(over), in.MaxStall, over[0]))
	}
	return byFault
}

// Impair is what one cut, pause or hang did to its victim's shards.
type Impair struct {
	Kind   Kind      `json:"kind"`
	Node   string    `json:"node"`
	Target string    `json:"target,omitempty"` // cut: kinesis, dynamodb, both
	At     time.Time `json:"at"`
	End    time.Time `json:"end"` // the cut cleared, the node resumed, the hang over
	// Shards are the victim's shards when the fault began. Moved gives for
	// each the seconds from At until another node first processed a record
	// of it (before End); NotMoved lists those no other node processed
	// before End. Recovery is the longest of Moved.
	Shards      []string           `json:"shards"`
	Moved       map[string]float64 `json:"moved_s,omitempty"`
	NotMoved    []string           `json:"not_moved,omitempty"`
	RecoverySec float64            `json:"recovery_s"`
	// StallSec is the longest stall laid to this fault.
	StallSec float64 `json:"stall_s"`

	// A cut of DynamoDB: LastWrite is the victim's last lease-table
	// write known to succeed before the cut, NextWrite its first after
	// the cut (zero: none); Late counts its ledger entries later than
	// LastWrite + LeaseExpiry and before NextWrite (must be 0).
	LastWrite   time.Time `json:"last_write,omitzero"`
	NextWrite   time.Time `json:"next_write,omitzero"`
	Late        int       `json:"late_deliveries"`
	LateSamples []string  `json:"late_samples,omitempty"`

	// A pause: Lost are the victim's shards another node owned (in the
	// lease samples) before the victim took them again; for each, the
	// batches and records the victim delivered after At and before
	// taking it again (at most one batch: the one in flight), and the
	// checkpoints it wrote there (must be none).
	Lost            []string       `json:"lost_shards,omitempty"`
	WokeBatches     map[string]int `json:"woke_batches,omitempty"`
	WokeRecords     map[string]int `json:"woke_records,omitempty"`
	WokeCheckpoints map[string]int `json:"woke_checkpoints,omitempty"`
}

func cutsDynamoDB(target string) bool {
	return target == "dynamodb" || target == "both" || target == ""
}

// verifyImpairs fills Impairs and fails the run on late deliveries after a
// DynamoDB cut and on stale batches or checkpoints after a pause.
func (r *Report) verifyImpairs(in Input, stalls map[int]Stall) {
	byShard := map[string][]*ledger.Entry{}
	for i := range in.Entries {
		e := &in.Entries[i]
		byShard[e.Shard] = append(byShard[e.Shard], e)
	}
	for _, es := range byShard {
		sort.SliceStable(es, func(i, j int) bool { return es[i].TS < es[j].TS })
	}
	for i, d := range in.Faults {
		if !d.Kind.impairs() || d.Err != "" {
			continue
		}
		at, end := d.At.UnixMilli(), int64(math.MaxInt64)
		if !d.End.IsZero() {
			end = d.End.UnixMilli()
		}
		im := Impair{Kind: d.Kind, Node: d.Node, Target: d.Target, At: d.At, End: d.End, Shards: d.Shards,
			Moved: map[string]float64{}, StallSec: stalls[i].Seconds}
		for _, s := range d.Shards {
			es := byShard[s]
			k := sort.Search(len(es), func(k int) bool { return es[k].TS > at })
			for ; k < len(es) && es[k].Node == d.Node; k++ {
			}
			if k < len(es) && es[k].TS <= end {
				im.Moved[s] = float64(es[k].TS-at) / 1000
				im.RecoverySec = max(im.RecoverySec, im.Moved[s])
			} else {
				im.NotMoved = append(im.NotMoved, s)
			}
		}
		writes := in.Writes[d.Node]
		if d.Kind == Cut && cutsDynamoDB(d.Target) && in.Writes != nil && in.LeaseExpiry > 0 {
			im.LastWrite = d.At
			for _, w := range writes {
				if w.At.Before(d.At) {
					im.LastWrite = w.At
				}
				if im.NextWrite.IsZero() && !d.End.IsZero() && !w.At.Before(d.End) {
					im.NextWrite = w.At
				}
			}
			fence, until := im.LastWrite.Add(in.LeaseExpiry).UnixMilli(), int64(math.MaxInt64)
			if !im.NextWrite.IsZero() {
				until = im.NextWrite.UnixMilli()
			}
			for _, e := range in.Entries {
				if e.Node == d.Node && e.TS > fence && e.TS < until {
					im.Late++
					if len(im.LateSamples) < 5 {
						im.LateSamples = append(im.LateSamples, fmt.Sprintf("%s at %s", e.Shard, time.UnixMilli(e.TS).UTC().Format("15:04:05.000")))
					}
				}
			}
			if im.Late > 0 {
				r.CutLate += im.Late
				r.Failures = append(r.Failures, fmt.Sprintf("cut of %s's DynamoDB: %d records delivered later than its last good write (%s) + lease expiry %s (e.g. %s)",
					d.Node, im.Late, im.LastWrite.UTC().Format("15:04:05.000"), in.LeaseExpiry, strings.Join(im.LateSamples, ", ")))
			}
		}
		if d.Kind.paused() {
			r.checkPause(in, d, &im, byShard, writes)
		}
		r.Impairs = append(r.Impairs, im)
	}
}

// checkPause fills the pause fields of im (see Impair). After a
// pause-after-take, the shards are also those whose take the victim's
// proxy answered during the pause (sent just before it, answered while it
// slept), and a retake counts only once it is awake.
func (r *Report) checkPause(in Input, d Done, im *Impair, byShard map[string][]*ledger.Entry, writes []Write) {
	at, awake := d.At, d.At
	shards := d.Shards
	if d.Kind == PauseAfterTake && !d.End.IsZero() {
		awake = d.End
		for _, w := range writes {
			if w.Take && w.At.After(at.Add(-2*time.Second)) && w.At.Before(d.End) && !slices.Contains(shards, w.Shard) {
				shards = append(shards, w.Shard)
			}
		}
		sort.Strings(shards)
	}
	im.WokeBatches, im.WokeRecords, im.WokeCheckpoints = map[string]int{}, map[string]int{}, map[string]int{}
	for _, s := range shards {
		var retake time.Time // the victim's first take of s after the pause (zero: none)
		for _, w := range writes {
			if w.Shard == s && w.Take && w.At.After(awake) {
				retake = w.At
				break
			}
		}
		beforeRetake := func(t time.Time) bool { return retake.IsZero() || t.Before(retake) }
		lost := false
		for _, sm := range in.Samples {
			if sm.Shard == s && !sm.At.Before(at) && beforeRetake(sm.At) && sm.Owner != d.Node {
				lost = true
				break
			}
		}
		if !lost {
			continue
		}
		im.Lost = append(im.Lost, s)
		batches := map[int64]bool{}
		for _, e := range byShard[s] {
			if e.Node == d.Node && e.TS >= at.UnixMilli() && beforeRetake(time.UnixMilli(e.TS)) {
				batches[e.TS] = true
				im.WokeRecords[s]++
			}
		}
		im.WokeBatches[s] = len(batches)
		cps := 0
		for _, w := range writes {
			if w.Shard == s && w.Checkpoint && w.At.After(at) && beforeRetake(w.At) {
				cps++
			}
		}
		im.WokeCheckpoints[s] = cps
		if n := im.WokeBatches[s]; n > 1 {
			r.PauseExtraBatches += n - 1
			r.Failures = append(r.Failures, fmt.Sprintf("pause of %s: %d batches (%d records) delivered on %s after waking, which another node had taken (want at most the one in flight)",
				d.Node, n, im.WokeRecords[s], s))
		}
		if n := im.WokeCheckpoints[s]; n > 0 {
			r.PauseCheckpoints += n
			r.Failures = append(r.Failures, fmt.Sprintf("pause of %s: %d checkpoints written on %s after waking, which another node had taken", d.Node, n, s))
		}
	}
}

func (im Impair) kindString() string {
	if im.Kind == Cut {
		return "cut " + im.Target
	}
	return string(im.Kind)
}

// checks describes the kind's checks for the table.
func (im Impair) checks() string {
	switch {
	case im.Kind == Cut && !im.LastWrite.IsZero():
		return fmt.Sprintf("last good write %s, %d delivered after it + lease expiry", im.LastWrite.UTC().Format("15:04:05.000"), im.Late)
	case im.Kind.paused():
		batches, records, cps := 0, 0, 0
		for _, s := range im.Lost {
			batches, records, cps = batches+im.WokeBatches[s], records+im.WokeRecords[s], cps+im.WokeCheckpoints[s]
		}
		return fmt.Sprintf("%d shards lost; after waking %d batches (%d records) and %d checkpoints on them", len(im.Lost), batches, records, cps)
	}
	return ""
}
