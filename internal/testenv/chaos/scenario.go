// Package chaos owns chaos scenarios: the seeded fault schedule, running it
// against a clusterrun.Cluster of `kinactor node` processes (with local
// servers behind fault-injecting proxies, one Kinesis and one DynamoDB
// proxy per node, a producer and a lease-table sampler), and the verifier
// that reads every ledger and reports lost records, duplicates by the fault
// that caused them, per-key order, backwards checkpoints, idle time after
// kills and stops, the longest stall of any shard with records waiting,
// and lease-table writes. `kinactor chaos` is its command; it is for tests
// and soak runs only.
//
// Whole-node faults: kill, restart, stop, partition. Whole-service faults
// (every node's proxy alike): throttle, errors, latency, and ambiguous
// (unless it names a node). Partial faults of one node: cut (its proxies
// blackhole its DynamoDB and/or Kinesis traffic), pause (SIGSTOP, then
// SIGCONT), hang (its processor stops answering, through `kinactor node
// --test-faults`' POST /faults/hang). Stream faults: split, merge.
//
// For the partial faults the verifier checks, besides the stall bound
// (Scenario.MaxStall): that a node cut off from DynamoDB delivers nothing
// later than LeaseExpiry after its last write whose success reached it (its
// proxy's log), and that a woken paused node delivers at most the batch it
// had in flight on each shard it lost and checkpoints none of them.
package chaos

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"time"
)

// Kind is a fault kind.
type Kind string

// The fault kinds.
const (
	Kill      Kind = "kill"      // SIGKILL a node
	Restart   Kind = "restart"   // start a node again (under a new name)
	Stop      Kind = "stop"      // SIGTERM a node: graceful leave
	Partition Kind = "partition" // cut gossip between two groups for For, then heal
	Throttle  Kind = "throttle"  // proxies answer Share of requests with ProvisionedThroughputExceededException for For
	Errors    Kind = "errors"    // proxies answer Share of requests with HTTP 500 for For
	Latency   Kind = "latency"   // proxies delay every request by Delay for For
	Split     Kind = "split"     // split an open shard at the middle (kinesis-mock)
	Merge     Kind = "merge"     // merge two adjacent open shards (kinesis-mock)
	Cut       Kind = "cut"       // one node's proxies blackhole its Target traffic for For
	Pause     Kind = "pause"     // SIGSTOP one node for For, then SIGCONT
	Hang      Kind = "hang"      // one node's processor stops answering for For
	Ambiguous Kind = "ambiguous" // DynamoDB proxies apply Share of writes and answer them with HTTP 500, for For

	// The faults that try to fool the crash and stall machinery (fooling.go).
	Stranger       Kind = "stranger"         // another application's nodes on our seeds and label, with colliding shard ids, for For (beside the faults after it)
	PauseAfterTake Kind = "pause-after-take" // start a node and SIGSTOP it right after it logs a lease take, for For
	Refuse         Kind = "refuse"           // one node's gossip port refuses TCP (UDP goes on) for For
	Churn          Kind = "churn"            // Nodes short-lived nodes join and are killed over For
)

// Kinds lists every fault kind.
var Kinds = []Kind{Kill, Restart, Stop, Partition, Throttle, Errors, Latency, Split, Merge, Cut, Pause, Hang, Ambiguous,
	Stranger, PauseAfterTake, Refuse, Churn}

func (k Kind) valid() bool {
	for _, v := range Kinds {
		if k == v {
			return true
		}
	}
	return false
}

// timed reports whether the fault lasts For and is then undone.
func (k Kind) timed() bool {
	switch k {
	case Partition, Throttle, Errors, Latency, Cut, Pause, Hang, Ambiguous, Stranger, PauseAfterTake, Refuse, Churn:
		return true
	}
	return false
}

// impairs reports whether the fault impairs one node (which keeps running)
// for For: cut, pause, hang, pause-after-take.
func (k Kind) impairs() bool { return k == Cut || k == Pause || k == Hang || k == PauseAfterTake }

// background reports whether the fault runs beside the faults after it
// (a stranger application) rather than before them.
func (k Kind) background() bool { return k == Stranger }

// paused reports whether the fault stops a node (SIGSTOP) for For.
func (k Kind) paused() bool { return k == Pause || k == PauseAfterTake }

// Duration is a time.Duration that reads and writes JSON as "1m30s" (a
// number is taken as seconds).
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var f float64
		if err := json.Unmarshal(b, &f); err != nil {
			return fmt.Errorf("duration: want \"30s\" or seconds, got %s", b)
		}
		*d = Duration(f * float64(time.Second))
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// Fault is one scheduled fault.
type Fault struct {
	At   Duration `json:"at"` // after the producer started
	Kind Kind     `json:"kind"`
	// Node names the victim of kill, stop, cut, pause and hang ("" picks a
	// random running node with the run's seeded generator), and limits
	// ambiguous to that node's DynamoDB proxy ("": every node's).
	Node string `json:"node,omitempty"`
	// For is how long a timed fault lasts: partition, throttle, errors,
	// latency and ambiguous default to 10s; cut, pause and hang to the
	// scenario's MaxStall + 5s, so that a node whose shards never move
	// fails the stall bound.
	For Duration `json:"for,omitempty"`
	// Share of requests throttled or failed, or of writes made ambiguous
	// (default 0.2); Delay added to requests by latency (default 200ms).
	Share float64  `json:"share,omitempty"`
	Delay Duration `json:"delay,omitempty"`
	// Target of throttle, errors, latency and cut: kinesis, dynamodb or
	// both (default both). Ambiguous is for dynamodb only.
	Target string `json:"target,omitempty"`
	// Shard to split ("" picks one); Shards to merge (two adjacent ids;
	// empty picks a pair).
	Shard  string   `json:"shard,omitempty"`
	Shards []string `json:"shards,omitempty"`
	// Nodes: how many nodes a stranger application runs (default 2), or
	// how many short-lived nodes a churn starts (default 8).
	Nodes int `json:"nodes,omitempty"`
}

// Scenario describes a chaos run.
type Scenario struct {
	Nodes    int      `json:"nodes"`    // node processes at the start (default 5)
	Shards   int      `json:"shards"`   // shards of the stream (default 16)
	Rate     float64  `json:"rate"`     // records per second (default 20)
	Keys     int      `json:"keys"`     // partition keys (default 32)
	Duration Duration `json:"duration"` // how long the producer runs (default 3m)
	Seed     uint64   `json:"seed"`     // seeds the schedule, victims and proxies (default 1)
	// Faults is an explicit schedule; when empty, Mix and Count make a
	// random one.
	Faults []Fault `json:"faults,omitempty"`
	Mix    []Kind  `json:"mix,omitempty"`   // kinds of a random schedule
	Count  int     `json:"count,omitempty"` // faults of a random schedule (default one per 15s)
	// Drain bounds the wait for every record to be processed after the
	// producer stopped (default 90s).
	Drain Duration `json:"drain,omitempty"`
	// NodeArgs are added to every node's arguments (default: short sync,
	// checkpoint and renew intervals, stall and process timeouts suited to
	// a short run). The verifier reads --renew-interval, --lease-expiry
	// and --stall-timeout from them (Timings).
	NodeArgs []string `json:"node_args,omitempty"`
	// MaxStall fails the run when any shard's records wait longer than
	// this with no node processing the shard (default LeaseExpiry +
	// StallTimeout + 10s, from Timings).
	MaxStall Duration `json:"max_stall,omitempty"`
	// Kinesis and DynamoDB choose the local servers: kinesis-mock or
	// kinesalite (default kinesis-mock when the schedule splits or
	// merges, else kinesalite); dynamodb-local or dynalite (default
	// dynalite).
	Kinesis  string `json:"kinesis,omitempty"`
	DynamoDB string `json:"dynamodb,omitempty"`
}

// DefaultNodeArgs are the node flags a scenario without NodeArgs uses.
var DefaultNodeArgs = []string{"--sync-interval", "2s", "--checkpoint-interval", "1s", "--renew-interval", "3s",
	"--stall-timeout", "10s", "--process-timeout", "5s", "--stop-timeout", "20s"}

// Timings are the node timings the verifier needs, as the scenario's node
// arguments set them (the node's defaults where they do not).
type Timings struct {
	RenewInterval  time.Duration // --renew-interval (default 30s)
	LeaseExpiry    time.Duration // --lease-expiry if given, else 3 × RenewInterval
	StallTimeout   time.Duration // --stall-timeout (default 30s)
	ProcessTimeout time.Duration // --process-timeout (default 5m)
}

// Timings reads the node timings from NodeArgs (DefaultNodeArgs when nil).
func (s Scenario) Timings() (Timings, error) {
	args := s.NodeArgs
	if args == nil {
		args = DefaultNodeArgs
	}
	t := Timings{}
	var errs []error
	for _, f := range []struct {
		name string
		v    *time.Duration
	}{{"renew-interval", &t.RenewInterval}, {"lease-expiry", &t.LeaseExpiry}, {"stall-timeout", &t.StallTimeout}, {"process-timeout", &t.ProcessTimeout}} {
		v, ok := nodeArg(args, f.name)
		if !ok {
			continue
		}
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			errs = append(errs, fmt.Errorf("node_args: --%s %q (want a duration)", f.name, v))
			continue
		}
		*f.v = d
	}
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	def(&t.RenewInterval, 30*time.Second)
	def(&t.LeaseExpiry, 3*t.RenewInterval)
	def(&t.StallTimeout, 30*time.Second)
	def(&t.ProcessTimeout, 5*time.Minute)
	return t, errors.Join(errs...)
}

// nodeArg finds flag name in args as Go's flag package reads it (-name v,
// --name v, -name=v, --name=v); the last one wins.
func nodeArg(args []string, name string) (string, bool) {
	val, found := "", false
	for i := 0; i < len(args); i++ {
		a := strings.TrimPrefix(strings.TrimPrefix(args[i], "-"), "-")
		if a == args[i] {
			continue // not a flag
		}
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			val, found = v, true
		} else if a == name && i+1 < len(args) {
			val, found = args[i+1], true
			i++
		}
	}
	return val, found
}

// maxStall is MaxStall, or its default from the timings.
func (s Scenario) maxStall() time.Duration {
	if s.MaxStall > 0 {
		return time.Duration(s.MaxStall)
	}
	t, _ := s.Timings()
	return t.LeaseExpiry + t.StallTimeout + 10*time.Second
}

// impairFor is how long cut, pause and hang last by default: past MaxStall,
// so that a node whose shards do not move fails the run.
func (s Scenario) impairFor() time.Duration { return s.maxStall() + 5*time.Second }

// defaultFor is how long a fault of kind k lasts when its For is not set,
// where the kind has a default of its own (0 where it takes the common
// 10s): cut, pause and hang past MaxStall (impairFor); pause-after-take
// past LeaseExpiry, so that its shards are taken during the pause; a
// stranger 40s (it is killed, restarted and stopped within it); a refusal
// 4s; a churn 30s.
func (s Scenario) defaultFor(k Kind) time.Duration {
	t, _ := s.Timings()
	switch k {
	case Cut, Pause, Hang:
		return s.impairFor()
	case PauseAfterTake:
		return t.LeaseExpiry + 5*time.Second
	case Stranger:
		return 40 * time.Second
	case Refuse:
		return 4 * time.Second
	case Churn:
		return 30 * time.Second
	}
	return 0
}

// Load reads a scenario from a JSON file.
func Load(path string) (Scenario, error) {
	var s Scenario
	b, err := os.ReadFile(path)
	if err != nil {
		return s, fmt.Errorf("chaos: scenario: %w", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return s, fmt.Errorf("chaos: scenario %s: %w", path, err)
	}
	return s, nil
}

// WithDefaults fills in defaults and checks the scenario.
func (s Scenario) WithDefaults() (Scenario, error) {
	if s.Nodes == 0 {
		s.Nodes = 5
	}
	if s.Shards == 0 {
		s.Shards = 16
	}
	if s.Rate == 0 {
		s.Rate = 20
	}
	if s.Keys == 0 {
		s.Keys = 32
	}
	if s.Duration == 0 {
		s.Duration = Duration(3 * time.Minute)
	}
	if s.Seed == 0 {
		s.Seed = 1
	}
	if s.Drain == 0 {
		s.Drain = Duration(90 * time.Second)
	}
	if s.NodeArgs == nil {
		s.NodeArgs = DefaultNodeArgs
	}
	var errs []error
	if _, err := s.Timings(); err != nil {
		errs = append(errs, err)
	}
	if s.MaxStall < 0 {
		errs = append(errs, fmt.Errorf("max_stall %s (want positive)", time.Duration(s.MaxStall)))
	}
	if s.MaxStall == 0 {
		s.MaxStall = Duration(s.maxStall())
	}
	if s.Nodes < 2 {
		errs = append(errs, fmt.Errorf("nodes %d (want at least 2)", s.Nodes))
	}
	if s.Shards < 1 || s.Shards > 200 {
		errs = append(errs, fmt.Errorf("shards %d (want 1..200)", s.Shards))
	}
	if s.Rate <= 0 || s.Keys < 1 || s.Duration <= 0 {
		errs = append(errs, fmt.Errorf("rate %g, keys %d, duration %s (want positive)", s.Rate, s.Keys, time.Duration(s.Duration)))
	}
	for _, k := range s.Mix {
		if !k.valid() {
			errs = append(errs, fmt.Errorf("unknown fault kind %q in mix (want %s)", k, kindList()))
		}
	}
	for i, f := range s.Faults {
		if !f.Kind.valid() {
			errs = append(errs, fmt.Errorf("fault %d: unknown kind %q (want %s)", i, f.Kind, kindList()))
		}
		switch f.Target {
		case "", "both", "kinesis", "dynamodb":
		default:
			errs = append(errs, fmt.Errorf("fault %d: target %q (want kinesis, dynamodb or both)", i, f.Target))
		}
		if f.Kind == Ambiguous && f.Target != "" && f.Target != "dynamodb" {
			errs = append(errs, fmt.Errorf("fault %d: ambiguous target %q (only dynamodb writes can be ambiguous)", i, f.Target))
		}
		if f.Share < 0 || f.Share > 1 {
			errs = append(errs, fmt.Errorf("fault %d: share %g (want 0..1)", i, f.Share))
		}
		if f.Nodes < 0 || (f.Nodes > 0 && f.Kind != Stranger && f.Kind != Churn) {
			errs = append(errs, fmt.Errorf("fault %d: nodes %d (only stranger and churn take a positive count)", i, f.Nodes))
		}
		if f.For < 0 || f.Delay < 0 || f.At < 0 {
			errs = append(errs, fmt.Errorf("fault %d: at %s, for %s, delay %s (must not be negative)", i, time.Duration(f.At), time.Duration(f.For), time.Duration(f.Delay)))
		}
	}
	switch s.Kinesis {
	case "", "kinesis-mock", "kinesalite":
	default:
		errs = append(errs, fmt.Errorf("kinesis %q (want kinesis-mock or kinesalite)", s.Kinesis))
	}
	switch s.DynamoDB {
	case "", "dynamodb-local", "dynalite":
	default:
		errs = append(errs, fmt.Errorf("dynamodb %q (want dynamodb-local or dynalite)", s.DynamoDB))
	}
	if s.DynamoDB == "" {
		s.DynamoDB = "dynalite"
	}
	if err := errors.Join(errs...); err != nil {
		return s, fmt.Errorf("chaos: invalid scenario: %w", err)
	}
	return s, nil
}

func kindList() string {
	var ks []string
	for _, k := range Kinds {
		ks = append(ks, string(k))
	}
	return strings.Join(ks, ", ")
}

// ParseKinds parses a comma-separated list of fault kinds.
func ParseKinds(list string) ([]Kind, error) {
	var ks []Kind
	for f := range strings.SplitSeq(list, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !Kind(f).valid() {
			return nil, fmt.Errorf("unknown fault kind %q (want %s)", f, kindList())
		}
		ks = append(ks, Kind(f))
	}
	return ks, nil
}

// Schedule returns the scenario's faults in time order: its explicit list
// (with defaults filled in), or else Count faults of the Mix kinds drawn
// from a generator seeded with seed, spread over the middle of the run
// (after a quarter-minute warm-up, ending early enough to see the last
// fault's effect). The same seed and scenario give the same schedule.
//
// A random schedule never takes more than Nodes-2 nodes down at once (a
// kill or stop that would is replaced by a restart, and a restart with no
// node down by the next kind of the mix), and timed faults do not overlap:
// a fault that would begin before the timed one before it ends (cut, pause
// and hang last longer than a slot) begins when it ends, and faults that
// would then begin too late are left out. A cut's target is drawn too.
func Schedule(seed uint64, s Scenario) []Fault {
	var fs []Fault
	if len(s.Faults) > 0 {
		fs = append(fs, s.Faults...)
	} else if len(s.Mix) > 0 {
		fs = randomSchedule(seed, s)
	}
	for i := range fs {
		f := &fs[i]
		if f.For == 0 {
			if d := s.defaultFor(f.Kind); d > 0 {
				f.For = Duration(d)
			}
		}
		if f.Kind.timed() && f.For == 0 {
			f.For = Duration(10 * time.Second)
		}
		if (f.Kind == Throttle || f.Kind == Errors || f.Kind == Ambiguous) && f.Share == 0 {
			f.Share = 0.2
		}
		if f.Kind == Latency && f.Delay == 0 {
			f.Delay = Duration(200 * time.Millisecond)
		}
		if (f.Kind == Throttle || f.Kind == Errors || f.Kind == Latency || f.Kind == Cut) && f.Target == "" {
			f.Target = "both"
		}
		if f.Kind == Ambiguous && f.Target == "" {
			f.Target = "dynamodb"
		}
	}
	sort.SliceStable(fs, func(i, j int) bool { return fs[i].At < fs[j].At })
	return fs
}

func randomSchedule(seed uint64, s Scenario) []Fault {
	rng := rand.New(rand.NewPCG(seed, seed^0x5eed0fc4a05))
	d := time.Duration(s.Duration)
	warm := min(15*time.Second, d/6)
	end := d - min(20*time.Second, d/6)
	n := s.Count
	if n <= 0 {
		n = max(1, int(d/(15*time.Second)))
	}
	slot := (end - warm) / time.Duration(n)
	down := 0
	var free time.Duration // when the last timed fault ends
	var fs []Fault
	for i := 0; i < n; i++ {
		k := s.Mix[rng.IntN(len(s.Mix))]
		if (k == Kill || k == Stop) && s.Nodes-down <= 2 {
			k = Restart
		}
		if k == Restart && down == 0 {
			k = "" // the next kind of the mix that needs no node down
			for j := 1; j <= len(s.Mix); j++ {
				c := s.Mix[(slices.Index(s.Mix, Restart)+j)%len(s.Mix)]
				if c != Restart {
					k = c
					break
				}
			}
			if k == "" {
				continue
			}
		}
		switch k {
		case Kill, Stop:
			down++
		case Restart:
			down--
		}
		at := warm + time.Duration(i)*slot + time.Duration(rng.Int64N(int64(max(slot/4, 1))))
		at = max(at, free).Truncate(100 * time.Millisecond)
		if at >= end {
			break
		}
		f := Fault{At: Duration(at), Kind: k}
		switch {
		case s.defaultFor(k) > 0:
			f.For = Duration(s.defaultFor(k))
		case k.timed():
			f.For = Duration(min(10*time.Second, slot*2/3).Truncate(100 * time.Millisecond))
		}
		if k == Cut {
			f.Target = []string{"dynamodb", "kinesis", "both"}[rng.IntN(3)]
		}
		if k.timed() && !k.background() {
			free = at + time.Duration(f.For)
		}
		fs = append(fs, f)
	}
	return fs
}

// needsResharding reports whether the schedule splits or merges.
func needsResharding(fs []Fault) bool {
	for _, f := range fs {
		if f.Kind == Split || f.Kind == Merge {
			return true
		}
	}
	return false
}
