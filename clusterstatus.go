package kinactor

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/engine"
	"github.com/kinactor/kinactor/internal/lease"
)

// ClusterStatus is the whole cluster as one node sees it: the shards of its
// copy of the lease table, the members of its gossip view, and what each
// live member's /status says of the shards it runs and of its moves. Any
// node serves the same picture (give or take the age of its table copy):
// /cluster as JSON, / as a page.
type ClusterStatus struct {
	// Node is the node that built the view; At is when.
	Node string    `json:"node"`
	At   time.Time `json:"at"`
	// Error: the serving node could not read its own status (not started,
	// stopped, or its coordinator did not answer); the view then has no
	// lease rows.
	Error   string         `json:"error,omitempty"`
	Members []MemberView   `json:"members"`
	Shards  []ShardView    `json:"shards"`
	Moves   []ClusterMove  `json:"moves"`
	Summary ClusterSummary `json:"summary"`
}

// ClusterSummary counts what the tables below hold.
type ClusterSummary struct {
	Members     int `json:"members"`
	Unreachable int `json:"unreachable"` // members whose /status could not be read
	Shards      int `json:"shards"`
	Owned       int `json:"owned"` // shards with an owner, not finished
	Stalled     int `json:"stalled"`
	Finished    int `json:"finished"`
	Unowned     int `json:"unowned"`
	Conflicts   int `json:"conflicts"` // shards whose table owner and live runner disagree
}

// MemberView is one member: gossip's view of it and what its /status said.
type MemberView struct {
	Name     string        `json:"name"`
	Addr     string        `json:"addr"` // gossip host:port
	HTTP     string        `json:"http,omitempty"`
	State    cluster.State `json:"state"`
	Self     bool          `json:"self,omitempty"` // the node serving the view
	Weight   int           `json:"weight"`
	Version  string        `json:"version,omitempty"`
	Draining bool          `json:"draining,omitempty"`
	// Unhealthy: services the member cannot use, from its meta and its
	// /status; Refused: shards it refuses.
	Unhealthy []string `json:"unhealthy,omitempty"`
	Refused   []string `json:"refused,omitempty"`
	// StatusError: why its /status could not be read ("" when it was).
	StatusError string `json:"status_error,omitempty"`
	// Owned: the shards the lease table gives it (not finished). Running:
	// the shards its /status lists (nil when unread). Stalled: how many of
	// those are stalled.
	Owned   int  `json:"owned"`
	Running *int `json:"running"`
	Stalled int  `json:"stalled"`
	// Sums over the shards it runs (nil when its /status was not read).
	RecordsPerSec *float64 `json:"records_per_second"`
	BytesPerSec   *float64 `json:"bytes_per_second"`
	Load          *float64 `json:"load"`
	// Health sums it up: "ok", "unhealthy", "stalled", "draining",
	// "unreachable" (no /status) or the gossip state when not alive.
	Health string `json:"health"`
}

// Shard states of the cluster view.
const (
	ShardProcessing = "processing"
	ShardWaiting    = "waiting_on_parents"
	ShardStarting   = "starting" // Initializing
	ShardStopping   = "stopping" // AwaitingShutdownAck, ShuttingDown, ShutdownComplete
	ShardStalled    = "stalled"
	ShardFinished   = "finished"    // checkpoint SHARD_END
	ShardUnowned    = "unowned"     // no owner in the table, none runs it
	ShardNotRunning = "not_running" // the owner answered, without the shard
	ShardOwnerGone  = "owner_gone"  // the owner is not in the gossip view (its lease runs out)
	ShardUnknown    = "unknown"     // the owner's /status could not be read
)

// ShardView is one shard of the cluster: its lease row and, when a member
// runs it, that member's live view of it. Live fields are null when no
// member that answered runs it.
type ShardView struct {
	// Stream is the stream's name, Shard the Kinesis shard id, Key the
	// lease key (the shard id in single-stream mode,
	// account:stream:creationEpoch:shardId in multi-stream mode).
	Stream string `json:"stream"`
	Shard  string `json:"shard"`
	Key    string `json:"key"`
	// Owner is the lease table's owner ("" when free). Running lists the
	// members whose /status lists the shard (normally just Owner).
	Owner   string   `json:"owner"`
	Running []string `json:"running,omitempty"`
	// Conflict says how the table and the live views disagree ("" when
	// they agree): the table copy may lag by a sync interval, or two nodes
	// both believe they hold the shard.
	Conflict string `json:"conflict,omitempty"`
	// State is one of the Shard* constants; ActorState the shard actor's
	// own (WaitingOnParentShards, Processing, …) when live.
	State      string `json:"state"`
	ActorState string `json:"actor_state,omitempty"`
	StallCause string `json:"stall_cause,omitempty"`
	// Note explains an unknown or odd state (an unreadable owner, …).
	Note string `json:"note,omitempty"`
	// From the lease row.
	Checkpoint    string   `json:"checkpoint"`
	CheckpointSub int64    `json:"checkpoint_sub,omitempty"`
	Counter       int64    `json:"lease_counter"`
	Parents       []string `json:"parents,omitempty"`
	// Live, from the member that runs it.
	MillisBehindLatest *int64   `json:"millis_behind_latest"`
	RecordsPerSec      *float64 `json:"records_per_second"`
	BytesPerSec        *float64 `json:"bytes_per_second"`
	Busy               *float64 `json:"busy"`
	SinceProgress      *float64 `json:"since_progress_seconds"`
	Measured           bool     `json:"measured,omitempty"` // the load is past its first sample
}

// ClusterMove is one member's ownership move.
type ClusterMove struct {
	Move
	Node string `json:"node"`
}

// How far back, and how many, moves the cluster view lists.
const (
	clusterMovesFor  = 15 * time.Minute
	clusterMovesKept = 500
)

// memberReport is what one member's /status gave.
type memberReport struct {
	Status NodeStatus
	Err    error
}

// clusterInput is everything the cluster view is built from.
type clusterInput struct {
	Self    string // the serving node
	SelfErr error  // its own status failed (no rows then)
	Stream  string // the stream's name in single-stream mode (multi-stream keys carry their own)
	App     string // members gossiping another app are left out ("" keeps all)
	Rows    []lease.Lease
	Members []cluster.Member
	Reports map[string]memberReport // by member name; a member missing was not asked
	Now     time.Time
}

// buildClusterStatus merges the lease rows, the gossip members and the
// members' reports into the cluster view. It is pure: everything it knows
// is in in.
func buildClusterStatus(in clusterInput) ClusterStatus {
	cs := ClusterStatus{Node: in.Self, At: in.Now, Members: []MemberView{}, Shards: []ShardView{}, Moves: []ClusterMove{}}
	if in.SelfErr != nil {
		cs.Error = in.SelfErr.Error()
	}
	members := map[string]cluster.Member{}
	for _, m := range in.Members {
		if in.App != "" && m.Meta.App != "" && m.Meta.App != in.App {
			continue // another application's node on the same gossip
		}
		members[m.Name] = m
	}
	// Who runs what, by the reports read.
	type live struct {
		node string
		sh   ShardStatus
	}
	running := map[string][]live{}
	for _, name := range sortedNames(in.Reports) {
		r := in.Reports[name]
		if _, ok := members[name]; !ok || r.Err != nil {
			continue
		}
		for _, sh := range r.Status.Shards {
			k := sh.LeaseKey() // by lease key: two streams may have the same shard ids
			running[k] = append(running[k], live{name, sh})
		}
	}

	rows := map[string]lease.Lease{}
	for _, r := range in.Rows {
		rows[r.Key] = r
	}
	keys := make([]string, 0, len(rows)+len(running))
	for k := range rows {
		keys = append(keys, k)
	}
	for k := range running {
		if _, ok := rows[k]; !ok {
			keys = append(keys, k) // run, but not (yet) in this node's table copy
		}
	}
	type label struct{ stream, shard string }
	labels := make(map[string]label, len(keys))
	for _, k := range keys {
		var l label
		l.stream, l.shard = engine.ShardLabels(k, in.Stream)
		labels[k] = l
	}
	slices.SortFunc(keys, func(a, b string) int {
		la, lb := labels[a], labels[b]
		return cmp.Or(cmp.Compare(la.stream, lb.stream), cmp.Compare(la.shard, lb.shard), cmp.Compare(a, b))
	})
	owned := map[string]int{}
	for _, k := range keys {
		row, inTable := rows[k]
		v := ShardView{Stream: labels[k].stream, Shard: labels[k].shard, Key: k, Owner: row.Owner, Counter: row.Counter,
			Checkpoint: row.Checkpoint.SequenceNumber, CheckpointSub: row.Checkpoint.SubSequenceNumber,
			Parents: row.ParentShardIDs}
		runs := running[k]
		for _, l := range runs {
			v.Running = append(v.Running, l.node)
		}
		// The live view: the table owner's if it runs the shard, else the
		// first runner's.
		var cur *ShardStatus
		for i := range runs {
			if cur == nil || runs[i].node == row.Owner {
				cur = &runs[i].sh
			}
		}
		switch {
		case !inTable:
			v.Conflict = fmt.Sprintf("not in %s's copy of the lease table; %s runs it", in.Self, strings.Join(v.Running, " and "))
		case len(runs) > 1:
			v.Conflict = fmt.Sprintf("run by %s at once", strings.Join(v.Running, " and "))
		case len(runs) == 1 && runs[0].node != row.Owner:
			if row.Owner == "" {
				v.Conflict = fmt.Sprintf("the lease table has no owner; %s runs it", runs[0].node)
			} else {
				v.Conflict = fmt.Sprintf("the lease table says %s; %s runs it", row.Owner, runs[0].node)
			}
		}
		if cur != nil {
			v.ActorState, v.StallCause = cur.State, cur.StallCause
			lag, rps, bps, busy, since := cur.MillisBehindLatest, cur.Load.RecordsPerSec, cur.Load.BytesPerSec, cur.Load.Busy, cur.SinceProgress
			v.MillisBehindLatest, v.RecordsPerSec, v.BytesPerSec, v.Busy, v.SinceProgress = &lag, &rps, &bps, &busy, &since
			v.Measured = cur.Load.Measured
		}
		switch {
		case row.Checkpoint.IsShardEnd():
			v.State = ShardFinished
		case cur != nil:
			v.State = liveState(*cur)
		case row.Owner == "":
			v.State = ShardUnowned
		default:
			m, member := members[row.Owner]
			r, asked := in.Reports[row.Owner]
			switch {
			case !member:
				v.State, v.Note = ShardOwnerGone, fmt.Sprintf("%s is not in the gossip view: its lease runs out, then another member takes the shard", row.Owner)
			case !asked:
				v.State, v.Note = ShardUnknown, fmt.Sprintf("%s is %s: its /status was not read", row.Owner, m.State)
			case r.Err != nil:
				v.State, v.Note = ShardUnknown, fmt.Sprintf("%s's /status: %v", row.Owner, r.Err)
			default:
				v.State, v.Note = ShardNotRunning, fmt.Sprintf("%s holds the lease but does not run the shard (starting, stopping, or the table copy lags)", row.Owner)
			}
		}
		if v.State != ShardFinished && row.Owner != "" {
			owned[row.Owner]++
		}
		cs.Shards = append(cs.Shards, v)
		s := &cs.Summary
		s.Shards++
		switch v.State {
		case ShardFinished:
			s.Finished++
		case ShardUnowned:
			s.Unowned++
		case ShardStalled:
			s.Stalled++
		}
		if v.State != ShardFinished && row.Owner != "" {
			s.Owned++
		}
		if v.Conflict != "" {
			s.Conflicts++
		}
	}

	for _, name := range sortedNames(members) {
		m := members[name]
		mv := MemberView{Name: m.Name, Addr: m.Addr, HTTP: m.Meta.HTTP, State: m.State, Self: m.Name == in.Self,
			Weight: max(m.Meta.Weight, 1), Version: m.Meta.Version, Draining: m.Meta.Draining,
			Unhealthy: slices.Clone(m.Meta.Unhealthy), Refused: slices.Clone(m.Meta.Refuse), Owned: owned[m.Name]}
		r, asked := in.Reports[m.Name]
		switch {
		case !asked:
			mv.StatusError = fmt.Sprintf("not asked: %s", m.State)
		case r.Err != nil:
			mv.StatusError = r.Err.Error()
		default:
			var rps, bps, load float64
			n := len(r.Status.Shards)
			for _, sh := range r.Status.Shards {
				rps += sh.Load.RecordsPerSec
				bps += sh.Load.BytesPerSec
				load += sh.Load.Weight
				if sh.Stalled {
					mv.Stalled++
				}
			}
			mv.Running, mv.RecordsPerSec, mv.BytesPerSec, mv.Load = &n, &rps, &bps, &load
			mv.Unhealthy = union(mv.Unhealthy, r.Status.Unhealthy)
			mv.Refused = union(mv.Refused, r.Status.Refused)
			for _, mov := range r.Status.Moves {
				if mov.Stream == "" { // a node that predates Stream: Shard is the lease key
					mov.Stream, mov.Shard, mov.Key = shortKey(mov.Shard, in.Stream)
				}
				if !mov.At.Before(in.Now.Add(-clusterMovesFor)) {
					cs.Moves = append(cs.Moves, ClusterMove{Move: mov, Node: m.Name})
				}
			}
		}
		switch {
		case m.State != cluster.StateAlive:
			mv.Health = m.State.String()
		case mv.StatusError != "":
			mv.Health = "unreachable"
			cs.Summary.Unreachable++
		case len(mv.Unhealthy) > 0:
			mv.Health = "unhealthy"
		case mv.Stalled > 0:
			mv.Health = "stalled"
		case mv.Draining:
			mv.Health = "draining"
		default:
			mv.Health = "ok"
		}
		cs.Members = append(cs.Members, mv)
	}
	cs.Summary.Members = len(cs.Members)
	slices.SortStableFunc(cs.Moves, func(a, b ClusterMove) int {
		return cmp.Or(b.At.Compare(a.At), cmp.Compare(a.Node, b.Node), cmp.Compare(a.Stream, b.Stream), cmp.Compare(a.Shard, b.Shard), cmp.Compare(a.Key, b.Key))
	})
	if len(cs.Moves) > clusterMovesKept {
		cs.Moves = cs.Moves[:clusterMovesKept]
	}
	return cs
}

// liveState is the view's state of a shard a member runs.
func liveState(sh ShardStatus) string {
	if sh.Stalled {
		return ShardStalled
	}
	switch sh.State {
	case "WaitingOnParentShards":
		return ShardWaiting
	case "Initializing":
		return ShardStarting
	case "Processing":
		return ShardProcessing
	case "AwaitingShutdownAck", "ShuttingDown", "ShutdownComplete":
		return ShardStopping
	}
	return strings.ToLower(sh.State)
}

func sortedNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// union: a's items, then b's not in a.
func union(a, b []string) []string {
	for _, s := range b {
		if !slices.Contains(a, s) {
			a = append(a, s)
		}
	}
	return a
}

// Timeouts of the cluster view: a member's /status, and the node's own.
const (
	clusterFetchTimeout = 700 * time.Millisecond
	clusterSelfTimeout  = 2 * time.Second
	clusterCacheFor     = time.Second
)

// ClusterStatus builds the cluster view: this node's lease-table copy and
// gossip view, and every live member's /status (read at its gossiped HTTP
// address, all at once, each within 700 ms). A member that cannot be read
// is marked so; its shards keep their owner from the table.
func (n *Node) ClusterStatus(ctx context.Context) ClusterStatus {
	sctx, cancel := context.WithTimeout(ctx, clusterSelfTimeout)
	self, rows, selfErr := n.status(sctx)
	cancel()
	members := n.Members()
	reports := make(map[string]memberReport, len(members))
	var mu sync.Mutex
	put := func(name string, r memberReport) {
		mu.Lock()
		defer mu.Unlock()
		reports[name] = r
	}
	var wg sync.WaitGroup
	for _, m := range members {
		switch {
		case m.Name == n.cfg.WorkerID:
			put(m.Name, memberReport{Status: self, Err: selfErr})
		case m.State != cluster.StateAlive && m.State != cluster.StateSuspect:
			// dead or left: not asked
		case m.Meta.HTTP == "":
			put(m.Name, memberReport{Err: errors.New("no HTTP address gossiped (started without --http)")})
		default:
			wg.Go(func() {
				st, err := fetchStatus(ctx, m.Meta.HTTP)
				put(m.Name, memberReport{Status: st, Err: err})
			})
		}
	}
	wg.Wait()
	return buildClusterStatus(clusterInput{
		Self: n.cfg.WorkerID, SelfErr: selfErr, Stream: n.stream,
		App:  appID(n.cfg.TableName, n.cfg.StreamName+n.cfg.StreamARN),
		Rows: rows, Members: members, Reports: reports, Now: time.Now(),
	})
}

var statusClient = &http.Client{Timeout: clusterFetchTimeout}

// fetchStatus reads a member's /status.
func fetchStatus(ctx context.Context, addr string) (NodeStatus, error) {
	var st NodeStatus
	ctx, cancel := context.WithTimeout(ctx, clusterFetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		return st, err
	}
	resp, err := statusClient.Do(req)
	if err != nil {
		if ue, ok := errors.AsType[*url.Error](err); ok {
			err = ue.Err // without the URL: "dial tcp …: connection refused"
		}
		return st, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return st, err
	}
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("decoding /status: %w", err)
	}
	return st, nil
}

// clusterCache keeps the last cluster view for clusterCacheFor, so that
// many open pages do not multiply the requests to every member. Callers
// arriving while a view is built wait for it.
type clusterCache struct {
	mu sync.Mutex
	at time.Time
	st ClusterStatus
}

func (c *clusterCache) get(ctx context.Context, build func(context.Context) ClusterStatus) ClusterStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < clusterCacheFor {
		return c.st
	}
	// Built for every waiter: not bound to the first caller's request.
	c.st = build(context.WithoutCancel(ctx))
	c.at = time.Now()
	return c.st
}
