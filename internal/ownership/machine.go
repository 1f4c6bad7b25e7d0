// Package ownership owns every rule of who takes which shard on a node, as
// a pure state machine in the style of package shardfsm: Machine.Step takes
// the current time and one event (a read of the lease table, a change of
// the gossip view, a gossip message, a result of one of its own effects, a
// report of a shard actor, a tick) and returns the effects to carry out
// (read the table, create or delete rows, take a lease, spawn or hand off a
// shard actor, gossip, publish this node's meta, probe a service). It does
// no I/O, starts no goroutines and reads no clock; the coordinator actor
// (package internal/engine) is the thin shell that executes the effects and turns
// their results back into events.
//
// The rules, in one place:
//
//   - Eligibility is a function of the lease rows alone, so that every node
//     computes the same eligible set from the same table: a row is eligible
//     unless it is at SHARD_END or its key is not a shard id of this stream
//     (a Java KCL multi-stream key "account:stream:epoch:shardId" is foreign
//     and left alone). The shard listing never filters eligibility; the
//     discovering node instead deletes rows of shards that two listings in a
//     row no longer show (past retention), the way the Java KCL collects
//     garbage leases, so their children stop waiting for them.
//   - Assignment: eligible shards over the live, non-draining members of the
//     same application, by Assign (weighted rendezvous, bounded load). Members that say in gossip that they are unhealthy are left
//     out, unless every member is (a service-wide outage must not move
//     anything); a shard a member refuses goes to the best-scoring member
//     that does not, if there is one.
//   - Takes: a shard assigned to this node is taken at once when its lease
//     is free, released, still ours, or held by a member gossip saw leave or
//     die. A lease whose counter stood still for LeaseExpiry may be taken by
//     any node, whoever it is assigned to: the takers of a shard are its
//     assignee (when that is not the holder) and then the other candidates
//     in rendezvous order without the holder; the k-th taker (from 0) takes
//     a held lease after (k+1)·LeaseExpiry and a free one after k·LeaseExpiry
//     (the assignee at once). Observations of the counter come from reads
//     of the table and from the holders' heartbeats (gossip), each timed by
//     this node's monotonic clock when it arrived; a take is conditional on
//     the counter observed, so a late observation costs a failed take, never
//     a stolen lease. The observations never go backwards on gossip: a
//     heartbeat or release with a lower counter than the one held is
//     dropped. A read of the table that began after the last gossip news
//     of a row arrived is the authority and replaces it even with a lower
//     counter (rows are deleted and created again; a wrong word must not
//     stop a lease from ever expiring).
//   - Gossip messages: every message says which application it is for
//     (Message.App, from Config.App: the table and stream). A message is
//     used only if it is for this application, its sender is a member of
//     this application in the view, its type is known and every key it
//     names is a shard id of this stream (IsShardID); otherwise it is
//     refused whole, and counted: the machine emits Refused{Reason} and the
//     shell counts kinactor_gossip_refused_total{reason}. (Nodes of other
//     applications may share the seeds and label, and every stream has a
//     shardId-000000000003.) A heartbeat is meant for one member: a failed
//     direct send of it is dropped, never broadcast; a release may fall
//     back to a broadcast, since strangers refuse it.
//   - Progress: every HeartbeatInterval (250 ms) while anything changed, a
//     holder sends each lease's counter, with the position its processor
//     acknowledged under that counter (what the next checkpoint would
//     write), to the lease's first two successors (who take it by expiry)
//     and its heir (who would take it at once if the holder died: with the
//     load bound, not always a successor), one message per destination. A
//     newcomer gets them in the step it joins. What a node heard never
//     goes backwards: news is ordered by counter, then by position
//     (Checkpoint.Compare); a late or repeated beat is dropped, and news
//     from a sender other than the one stored replaces it only with a
//     higher counter (a new holder). Each flush may travel on its own
//     connection, so beats to one member can arrive out of order.
//   - Resuming: a node taking a lease from a dead owner (gone from the view,
//     or proven dead) resumes from the later of the row's checkpoint and the
//     position that owner sent for exactly the counter the take is
//     conditional on, and writes it with the take (Resume). Nothing is
//     skipped, by this argument: the take succeeds only if the counter has
//     not moved since it was read, so the owner wrote nothing after the
//     news was sent under that counter; the owner sent only positions its
//     shard machine accepted as acknowledged, and the shard machine accepts
//     only positions it delivered, in this shard, to a processor that
//     answered for them (a checkpoint beyond what was delivered is refused
//     and never sent); so the position is one the processor had done. News
//     under another counter, from another sender, not later than the row,
//     or for a finished shard loses to the row. Positions are checked for
//     their form only: that a position is of this shard rests on it coming
//     from a member of this application's view, in a message for this
//     application (see Gossip messages; gossip label, secret key).
//   - Proof of death: a lease held by an owner outside the view (a restart
//     under new names, a single node with no gossip) is taken at once only
//     if the owner is proven dead: another member now has its gossip address
//     (seen in the view), or the shell's ProveDead finds that its process is
//     gone from this host or that its gossip address refuses connections
//     (the row keeps the holder's address, host and process id; a zombie
//     process, killed but not yet reaped, is dead). Short of a proof,
//     expiry as above; a failed proof is tried again soon, with a backoff
//     per owner: ProofRetryBase (100 ms) after the first, doubling up to
//     ProofRetryCap (5 s) (a restarted node's first proof may find the old
//     process not quite gone).
//   - Lost leases: a lease this node lost to a fenced write is not taken
//     back by judging its taker dead (both halves of a partition would take
//     it back and forth), only by expiry, until the lease has moved on or
//     the taker has rejoined the view (SettleLost).
//   - Handoffs: a running shard assigned elsewhere is handed off gracefully.
//     This node's own health marks are used for planning only once they have
//     been published for HealthSettle, so that in a service-wide outage every
//     node has marked itself before anyone hands anything off.
//   - Health: a shard actor that stalls reports it (with the service it
//     stalled on); when every shard of the node is stalled on one service, or
//     the node's own calls to a service have failed for StallTimeout, or a
//     shard fenced itself because its lease writes failed, the node is
//     unhealthy on that service; otherwise a stalled shard is refused. Both
//     are published in the node's gossip meta. Unhealthy services are probed
//     until they answer; refusals last RefusalTTL (a shard stopped by the
//     failure policy, for the node's life).
//   - Rows: the discovering node (the lowest-named healthy candidate) lists
//     the shards, creates missing rows (NewRows), deletes finished parents
//     (FinishedParents) and garbage (unlisted) rows.
//   - Memory: every map in the machine is bounded by what the table and the
//     view hold (worker names are unique per process: every restart
//     anywhere brings new ones). What is kept of a row (its copy, expiry,
//     progress heard, failures, refusals, lost races, retries, lost marks,
//     listing misses) goes at the read that shows the row deleted, unless
//     the shard runs or is being taken here; progress also goes when the
//     row reaches SHARD_END. What is kept of a member that left the view
//     (gone, joinedAt) goes once no row names it and it has been gone for
//     memberTTL (max(2·LeaseExpiry, 2·sync interval, 2·SyncTimeout): see
//     there why that is long enough); the proof state of an owner, once no
//     row names it. Sizes reports every map's size.
//
// Cost: the assignment is cached and recomputed only when the eligible set
// or the candidates change; any other event re-evaluates only the shards it
// concerns, so a release, a heartbeat or a take costs O(members), not
// O(shards). Expiry deadlines live in a heap.
//
// This package must not import the actors package, the root package or any
// AWS client.
package ownership

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/backoff"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/shardfsm"
)

// Services a node can be unhealthy on, as gossiped in cluster.Meta.
const (
	ServiceKinesis   = "kinesis"
	ServiceDynamoDB  = "dynamodb"
	ServiceProcessor = "processor"
)

// Reasons for taking a lease (the lease_takes_total label).
const (
	TakeFree      = "free"       // never owned
	TakeReleased  = "released"   // released by its last owner
	TakeDeadOwner = "dead_owner" // its owner left or died in the gossip view
	TakeExpired   = "expired"    // its counter stood still long enough
	TakeOwn       = "own"        // still ours in the table, but no actor runs it here
)

// ReasonStreamRemoved is the Handoff reason of a shard whose stream left
// the set of streams consumed.
const ReasonStreamRemoved = "stream removed"

// Config configures a Machine. Zero durations take the defaults noted.
type Config struct {
	Me string // this node's worker id (leaseOwner, gossip name)
	// Clustered: the node is one of a gossip cluster. False: it takes every
	// eligible shard and never gossips.
	Clustered bool
	// App identifies the application (lease table and stream) in gossip
	// meta; members with another App are ignored altogether.
	App string
	// Meta is this node's own meta (weight, version, HTTP address); the
	// machine adds App, Draining and the health fields.
	Meta cluster.Meta

	LeaseExpiry  time.Duration // default 90s
	StallTimeout time.Duration // default 30s
	// HealthSettle: how long this node's own health marks must have been
	// published before it plans with them (default 2s).
	HealthSettle time.Duration
	// RefusalTTL: how long a stalled or unreadable shard stays refused, and
	// a processor-unhealthy mark stands (default 2 × StallTimeout).
	RefusalTTL time.Duration
	// ProbeInterval: how often an unhealthy service is probed (default 2s).
	ProbeInterval time.Duration
	// Reads of the table when nothing happens (gossip carries takes,
	// releases and progress; events and failed takes read at once): the
	// discovering node lists the shards every SyncInterval (default 10s)
	// and reads the table only when the listing shows a shard without a
	// row or a row without a shard, and every LeaderReadInterval (default
	// 2 × FollowerSyncInterval); every other member reads it every
	// FollowerSyncInterval (default 60s) × (candidates − 1), so that the
	// reads of the whole cluster do not grow with its size.
	SyncInterval         time.Duration
	FollowerSyncInterval time.Duration
	LeaderReadInterval   time.Duration
	// SyncTimeout: a read of the table (with its row writes) not answered
	// by then is given up on and another one started, so that one hung
	// call cannot stop the discovering node from creating rows (default
	// max(2 × SyncInterval, 10s)).
	SyncTimeout time.Duration
	// HeartbeatInterval: how often heartbeats are flushed (default 250ms).
	HeartbeatInterval time.Duration
	// InitialCheckpoint of new rows of shards without parents (a listed
	// Shard's Initial overrides it).
	InitialCheckpoint string
	// MultiStream: lease keys are multi-stream keys, and only those of
	// Streams (stream ids account:name:epoch; StreamsChanged replaces
	// them) are this application's shards.
	MultiStream bool
	Streams     []string
	// TakeBackoff after a take that failed with an error (not a lost
	// race), SyncBackoff after a failed read, CrashBackoff before taking
	// again a shard whose actor crashed (the first retake is at once).
	TakeBackoff  backoff.Policy
	SyncBackoff  backoff.Policy
	CrashBackoff backoff.Policy
	Rand         *rand.Rand // jitter; nil: global

	// LoadAware assigns by measured shard load instead of shard count
	// (see load.go): LoadThreshold (default 0.10) over its share before a
	// member sheds shards, at most LoadMaxMoves (default 2) per
	// RebalanceInterval (default 10s), none moved again within
	// LoadCoolDown (default 5m).
	LoadAware         bool
	LoadThreshold     float64
	LoadMaxMoves      int
	RebalanceInterval time.Duration
	LoadCoolDown      time.Duration
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.LeaseExpiry, 90*time.Second)
	def(&c.StallTimeout, 30*time.Second)
	def(&c.HealthSettle, 2*time.Second)
	def(&c.RefusalTTL, 2*c.StallTimeout)
	def(&c.ProbeInterval, 2*time.Second)
	def(&c.SyncInterval, 10*time.Second)
	def(&c.FollowerSyncInterval, 60*time.Second)
	def(&c.LeaderReadInterval, 2*c.FollowerSyncInterval)
	def(&c.SyncTimeout, max(2*c.SyncInterval, 10*time.Second))
	def(&c.HeartbeatInterval, 250*time.Millisecond)
	def(&c.RebalanceInterval, 10*time.Second)
	def(&c.LoadCoolDown, 5*time.Minute)
	if c.LoadThreshold <= 0 {
		c.LoadThreshold = 0.10
	}
	if c.LoadMaxMoves <= 0 {
		c.LoadMaxMoves = 2
	}
	if c.InitialCheckpoint == "" {
		c.InitialCheckpoint = lease.CheckpointTrimHorizon
	}
	pol := func(p *backoff.Policy, base, cap time.Duration) {
		if p.Base <= 0 || p.Cap < p.Base {
			*p = backoff.Policy{Base: base, Cap: cap}
		}
	}
	pol(&c.TakeBackoff, 250*time.Millisecond, 10*time.Second)
	pol(&c.SyncBackoff, 250*time.Millisecond, c.SyncInterval)
	pol(&c.CrashBackoff, 100*time.Millisecond, 30*time.Second)
	return c
}

// ---- Events -------------------------------------------------------------

// Event is an input to Step.
type Event interface{ isEvent() }

type (
	// Started begins the machine's life: read the table.
	Started struct{}
	// Tick is sent by the shell at a steady rate (every 250ms or so): it
	// drives expiry, settle and refusal deadlines, syncs, probes and the
	// heartbeat flush. Any rate works; deadlines are met at the next tick.
	Tick struct{}
	// ViewChanged carries the gossip view after a change, and which
	// members joined or went (left or died) in it, if known.
	ViewChanged struct {
		Members []cluster.Member
		Joined  []string
		Gone    []string
	}
	// MessageReceived is a coordinator gossip message from From.
	MessageReceived struct {
		From string
		Msg  Message
	}
	// SyncDone answers Sync: the rows read (when ReadErr is nil) and, on
	// the discovering node, the shard listing (when Listed and ListErr is
	// nil).
	SyncDone struct {
		Seq     uint64 // the Sync's
		Leases  []lease.Lease
		ReadErr error
		Listed  bool
		Shards  []Shard
		ListErr error
		// Unread: the answer to a ListOnly Sync (Leases and ReadErr
		// are empty: the table was not read).
		Unread bool
	}
	// RowsDone answers WriteRows; Err is the first error (the rest were
	// not attempted); Changed: something was created or deleted.
	RowsDone struct {
		Seq     uint64 // the WriteRows'
		Changed bool
		Err     error
	}
	// TakeDone answers Take: the row as written, or Err (wrapping
	// lease.ErrLeaseLost when the lease moved first).
	TakeDone struct {
		Key    string
		Reason string
		Lease  lease.Lease
		Err    error
		// LostRace: Err is a lost race (lease.ErrLeaseLost), not a failure.
		LostRace bool
	}
	// ShardWrote: a shard actor's lease write succeeded; Lease is the row
	// as written (its new counter).
	ShardWrote struct{ Lease lease.Lease }
	// ShardAcked: a shard's processor acknowledged records up to
	// Checkpoint (the next checkpoint write will write it).
	ShardAcked struct {
		Key        string
		Checkpoint lease.Checkpoint
	}
	// ShardHealth: a shard actor's stall state changed. Cause is one of
	// the Service names while Stalled.
	ShardHealth struct {
		Key     string
		Stalled bool
		Cause   string
	}
	// ShardFinished: a shard actor reached the end of its life.
	ShardFinished struct {
		Key     string
		Outcome shardfsm.Outcome
		Counter int64  // the lease counter after a release
		Cause   string // the service behind a Fenced or Unreadable outcome
	}
	// ShardCrashed: a shard actor stopped without finishing (a panic, or
	// it could not be spawned). Its lease is still ours in the table.
	ShardCrashed struct{ Key string }
	// ProofDone answers ProveDead: Dead when the owner is proven dead
	// (How says by what).
	ProofDone struct {
		Owner string
		Dead  bool
		How   string
	}
	// StreamsChanged: the streams consumed now (multi-stream), by stream
	// id (account:name:epoch).
	StreamsChanged struct{ Streams []string }
	// ProbeDone answers Probe.
	ProbeDone struct {
		Service string
		Err     error
	}
	// StopAll asks for a graceful stop of every shard; StopDone follows
	// when none runs any more.
	StopAll struct{}
	// StopDeadline: the stop ran out of time; StopDone follows at once,
	// listing the shards still running (their leases are left to expire).
	StopDeadline struct{}
)

func (Started) isEvent()         {}
func (Tick) isEvent()            {}
func (StreamsChanged) isEvent()  {}
func (ViewChanged) isEvent()     {}
func (MessageReceived) isEvent() {}
func (SyncDone) isEvent()        {}
func (RowsDone) isEvent()        {}
func (TakeDone) isEvent()        {}
func (ShardWrote) isEvent()      {}
func (ShardAcked) isEvent()      {}
func (ShardHealth) isEvent()     {}
func (ShardFinished) isEvent()   {}
func (ShardCrashed) isEvent()    {}
func (ProbeDone) isEvent()       {}
func (ProofDone) isEvent()       {}
func (StopAll) isEvent()         {}
func (StopDeadline) isEvent()    {}

// Shard is one shard of the stream listing, as far as rows need it.
type Shard struct {
	ID      string
	Parents []string // parent and adjacent parent, if any
	Closed  bool     // has an ending sequence number
	// Initial is the checkpoint of a new row when the shard has no
	// parent ("": Config.InitialCheckpoint): a stream's own initial
	// position in a multi-stream application.
	Initial         string
	StartingHashKey string
	EndingHashKey   string
}

// Message is what coordinators tell each other by gossip. The machine
// fills App in every message it sends; a message received is refused
// (see Refused) unless it is for this application, comes from a member of
// this application in the view and names only shard ids of this stream.
type Message struct {
	// App is the application the message is for (Config.App: the lease
	// table and stream). Nodes of other applications may share the gossip
	// seeds and label, and every stream has a shardId-000000000003.
	App string `json:"a"`
	// Type is "released" (Shard was released at Counter), "shards" (rows
	// were created or deleted: read the table) or "hb" (heartbeats:
	// Leases were written at these counters).
	Type    string `json:"t"`
	Shard   string `json:"s,omitempty"`
	Counter int64  `json:"c,omitempty"`
	At      int64  `json:"at,omitempty"` // sender's clock, Unix ms (metrics only)
	// Draining: the sender is leaving; plan without it at once.
	Draining bool   `json:"d,omitempty"`
	Leases   []Beat `json:"l,omitempty"`
	// To: in a release for load, the member the shard was handed to.
	To string `json:"to,omitempty"`
	// Loads: in a "load" message, the sender's shards' load weights.
	Loads []ShardWeight `json:"w,omitempty"`
}

// Beat is one lease in a heartbeat: its holder wrote it at Counter.
type Beat struct {
	Shard   string `json:"s"`
	Counter int64  `json:"c"`
	// Seq and Sub: the last position its processor acknowledged (what the
	// next checkpoint would write), accepted while the holder held the
	// lease at Counter or before; empty when nothing was acknowledged.
	Seq string `json:"q,omitempty"`
	Sub int64  `json:"u,omitempty"`
}

// Message types.
const (
	MsgReleased  = "released"
	MsgShards    = "shards"
	MsgHeartbeat = "hb"
	MsgLoad      = "load"
)

// Why a gossip message was refused (the Refused effect's Reason, the
// kinactor_gossip_refused_total label).
const (
	RefusedApp       = "app"       // Message.App is not this application's
	RefusedStranger  = "stranger"  // the sender is not a member of this application in the view
	RefusedKey       = "key"       // it names a key that is not a shard id of this stream
	RefusedType      = "type"      // an unknown message type
	RefusedMalformed = "malformed" // (the shell) the payload does not decode
)

// ---- Effects ------------------------------------------------------------

// Effect is an output of Step for the shell to carry out, in order.
type Effect interface{ isEffect() }

type (
	// Sync reads every row; with List, also lists the stream's shards.
	// Answer with SyncDone carrying Seq.
	Sync struct {
		List bool
		// ListOnly: list the shards without reading the table (the
		// discovering node between its reads); the SyncDone has Unread.
		ListOnly bool
		Seq      uint64
	}
	// WriteRows creates rows (attribute_not_exists; an existing row is not
	// an error) and deletes rows (conditional on the counter read; a lost
	// race or a missing row is not an error). Answer with RowsDone.
	WriteRows struct {
		Seq    uint64 // answer with RowsDone carrying it
		Create []lease.Lease
		Delete []lease.Lease
	}
	// Take takes a lease conditional on the owner and counter in Lease.
	// Answer with TakeDone. Resume, when set, is written as the checkpoint
	// with the take: what the previous holder's processor acknowledged
	// under that very counter, later than the row's checkpoint.
	Take struct {
		Lease  lease.Lease
		Resume *lease.Checkpoint
		Reason string
		// UnownedFor: how long the shard had no live owner, when known
		// (metrics).
		UnownedFor time.Duration
	}
	// Spawn starts a shard actor for a lease this node now holds.
	Spawn struct{ Lease lease.Lease }
	// Handoff asks a running shard actor to stop gracefully (checkpoint,
	// release). To is the new assignee ("" when the node is stopping).
	Handoff struct {
		Key, To string
		// Reason: "load" for a move decided by the load-aware rebalance,
		// "" for any other change of the assignment or a stop.
		Reason string
	}
	// Send sends a message to one member (reliable), in order with the
	// other sends to it. If that fails, a heartbeat is dropped (it is meant
	// for that member; the next flush carries its news again) and a
	// release is broadcast instead. Broadcast gossips it to all.
	Send struct {
		To  string
		Msg Message
	}
	Broadcast struct{ Msg Message }
	// PublishMeta gossips this node's meta.
	PublishMeta struct{ Meta cluster.Meta }
	// Probe checks whether a service answers; answer with ProbeDone.
	Probe struct{ Service string }
	// ProveDead checks whether a lease owner outside the gossip view can
	// still be alive: its gossip address refuses connections, or it ran on
	// this host and its process is gone (or a zombie). Answer with
	// ProofDone.
	ProveDead struct {
		Owner    string
		Identity lease.Identity
	}
	// StopDone: the graceful stop is over; Left lists the shards that were
	// still running (leases left to expire).
	StopDone struct{ Left []string }
	// Refused: a gossip message was refused, for Reason (one of the
	// Refused* constants); nothing of it was used. The shell counts it
	// (kinactor_gossip_refused_total{reason}); it is no log line, since a
	// stranger can send any number of them.
	Refused struct {
		From, Type, Reason string
	}
	// Note is a decision worth a log line (the shell logs it at Level).
	Note struct {
		Level int // -4 debug, 0 info, 4 warn, 8 error (slog levels)
		Msg   string
		Args  []any
	}
)

func (Sync) isEffect()        {}
func (WriteRows) isEffect()   {}
func (Take) isEffect()        {}
func (Spawn) isEffect()       {}
func (Handoff) isEffect()     {}
func (Send) isEffect()        {}
func (Broadcast) isEffect()   {}
func (PublishMeta) isEffect() {}
func (Probe) isEffect()       {}
func (ProveDead) isEffect()   {}
func (StopDone) isEffect()    {}
func (Refused) isEffect()     {}
func (Note) isEffect()        {}

type effects []Effect

func (o *effects) add(e ...Effect) { *o = append(*o, e...) }

func (o *effects) note(level int, msg string, args ...any) {
	*o = append(*o, Note{Level: level, Msg: msg, Args: args})
}

// ---- State --------------------------------------------------------------

// running is a shard with an actor on this node.
type running struct {
	releasing bool // handed off (or stopping)
}

// memberInfo is what the machine keeps of a member of the view.
type memberInfo struct {
	m       cluster.Member
	unheal  map[string]bool
	refuses map[string]bool
}

// Machine is one node's ownership state. Create it with New; drive it with
// Step. It is not safe for concurrent use: the coordinator actor owns it.
type Machine struct {
	cfg Config

	// the table, as last read and updated by our own writes and gossip
	leases   map[string]lease.Lease
	heardAt  map[string]time.Time // rows we heard of outside a read (gossip, our own writes), and when
	eligible map[string]bool
	expiry   *expiryTracker

	// the view
	members  map[string]*memberInfo // same-app members in the view, ourselves included
	gone     map[string]time.Time   // members gossip saw leave or die, or proven dead (until they rejoin)
	proofs   map[string]proofState  // owners outside the view a proof of death was asked for
	joinedAt map[string]time.Time
	draining map[string]bool // members that said they are leaving

	// this node
	run      map[string]*running
	stalled  map[string]string // running shards that stalled → the service
	taking   map[string]bool
	retryAt  map[string]time.Time // no take before (after a failed take or a crash)
	raced    map[string]int64     // a take lost its race at this counter: wait for a fresher row
	tried    map[string]int64     // the counter a take in flight is conditional on
	failures map[string]int       // consecutive failed takes or crashes per shard
	lost     map[string]lostLease
	refused  map[string]time.Time // until; zero time: for good
	// refusedFor: the service a stall refusal was for ("" for the failure
	// policy or an unreadable shard); it ends when the node becomes
	// unhealthy on that service (then the whole node moves, or nothing).
	refusedFor map[string]string
	health     health
	stopping   bool
	stopDone   bool

	// assignment cache
	cands       []candidate // the healthy candidates it was computed over
	assign      map[string]string
	assignDirty bool
	assignments int // how many times it was computed
	// heirs is the assignment this node's death would leave (computed
	// over cands without it, when a heartbeat needs it after a change):
	// who would take each shard at once. They get its heartbeats too.
	heirs      map[string]string
	heirsStale bool
	dirty      map[string]bool

	// syncs
	syncing     bool
	syncSeq     uint64    // of the read (or row writes) in flight
	readFrom    time.Time // when the read in flight was asked for
	resync      bool
	lastSync    time.Time
	nextSync    time.Time
	nextRead    time.Time       // the discovering node's next read of the table (not only a listing)
	listOnly    bool            // the sync in flight is a listing without a read
	confirm     map[string]bool // shards whose standstill waits for a read (plan.go confirmed)
	syncFails   int
	unlisted    map[string]int // discovering node: listings in a row that missed a row's shard
	rowsPending bool

	// heartbeats to flush, per destination; progress: the acknowledged
	// positions of this node's shards, and those heard from others
	beats     map[string]map[string]Beat
	acked     map[string]lease.Checkpoint
	progress  map[string]heardProgress
	lastFlush time.Time
	lastPrune time.Time
	rng       *rand.Rand

	// load-aware assignment (load.go)
	now           time.Time        // of the step under way
	loads         map[string]int64 // shard → load weight in millionths, as its holder last sent it
	pending       map[string]pendingMove
	movedAt       map[string]time.Time // when this node saw the shard move
	keys          KeySpace             // which rows are ours (multi-stream: the streams consumed)
	lastRebalance time.Time
	wasOver       bool       // this node was over its share at the last rebalance
	loadMoves     []LoadMove // decided since TakeLoadMoves
}

// heardProgress is what a holder said its processor acknowledged on a
// shard, while it held the lease at counter.
type heardProgress struct {
	from    string
	counter int64
	cp      lease.Checkpoint
	at      time.Time // when it was heard
}

// lostLease is a lease this node lost to a fenced write: when, and to whom
// ("" until a read of the table shows it).
type lostLease struct {
	To string
	At time.Time
}

// New returns a machine for cfg.
func New(cfg Config) *Machine {
	cfg = cfg.withDefaults()
	m := &Machine{
		cfg:        cfg,
		leases:     map[string]lease.Lease{},
		heardAt:    map[string]time.Time{},
		eligible:   map[string]bool{},
		expiry:     newExpiryTracker(),
		members:    map[string]*memberInfo{},
		gone:       map[string]time.Time{},
		proofs:     map[string]proofState{},
		joinedAt:   map[string]time.Time{},
		draining:   map[string]bool{},
		run:        map[string]*running{},
		stalled:    map[string]string{},
		taking:     map[string]bool{},
		retryAt:    map[string]time.Time{},
		raced:      map[string]int64{},
		tried:      map[string]int64{},
		failures:   map[string]int{},
		lost:       map[string]lostLease{},
		refused:    map[string]time.Time{},
		refusedFor: map[string]string{},
		dirty:      map[string]bool{},
		unlisted:   map[string]int{},
		beats:      map[string]map[string]Beat{},
		acked:      map[string]lease.Checkpoint{},
		progress:   map[string]heardProgress{},
		loads:      map[string]int64{},
		pending:    map[string]pendingMove{},
		movedAt:    map[string]time.Time{},
		confirm:    map[string]bool{},
		rng:        cfg.Rand,
	}
	m.health.init()
	m.keys = KeySpace{Multi: cfg.MultiStream, Active: map[string]bool{}}
	for _, s := range cfg.Streams {
		m.keys.Active[s] = true
	}
	if !cfg.Clustered {
		m.members[cfg.Me] = &memberInfo{m: cluster.Member{Name: cfg.Me, Meta: m.ownMeta()}}
	}
	return m
}

// Step applies one event at time now (a time.Now() reading) and returns the
// effects to carry out.
func (m *Machine) Step(now time.Time, ev Event) []Effect {
	var out effects
	if m.stopDone {
		return nil
	}
	m.now = now
	switch e := ev.(type) {
	case LoadSampled:
		m.onLoadSampled(now, e, &out)
	case Started:
		m.requestSync(now, &out)
	case Tick:
		m.onTick(now, &out)
	case ViewChanged:
		m.onView(now, e, &out)
	case MessageReceived:
		m.onMessage(now, e, &out)
	case SyncDone:
		m.onSync(now, e, &out)
	case RowsDone:
		m.onRows(now, e, &out)
	case TakeDone:
		m.onTake(now, e, &out)
	case ShardWrote:
		m.onShardWrote(now, e, &out)
	case ShardAcked:
		m.onShardAcked(now, e, &out)
	case ShardHealth:
		m.onShardHealth(now, e, &out)
	case ShardFinished:
		m.onFinished(now, e, &out)
	case ShardCrashed:
		m.onCrashed(now, e, &out)
	case ProbeDone:
		m.onProbe(now, e, &out)
	case ProofDone:
		m.onProof(now, e, &out)
	case StreamsChanged:
		m.onStreams(now, e, &out)
	case StopAll:
		m.onStopAll(now, &out)
	case StopDeadline:
		m.finishStop(&out)
		return out
	}
	m.updateHealth(now, &out)
	before := m.assignments
	m.plan(now, &out)
	if m.assignments != before {
		mine := 0
		for _, o := range m.assign {
			if o == m.cfg.Me {
				mine++
			}
		}
		out.note(-4, "assignment", "candidates", len(m.cands), "shards", len(m.assign), "mine", mine, "running", len(m.run))
	}
	m.maybeStopDone(&out)
	return out
}

// ---- Queries (for status and tests) ---------------------------------------

// Running lists the shards with an actor on this node.
func (m *Machine) Running() []string { return sortedKeys(m.run) }

// Assignment returns the owner the current assignment gives key ("" when
// the shard is not eligible).
func (m *Machine) Assignment(key string) string {
	m.ensureAssignment()
	return m.assign[key]
}

// Unhealthy lists the services this node has published as unusable.
func (m *Machine) Unhealthy() []string { return m.health.published.Unhealthy }

// Refused lists the shards this node has published as refused.
func (m *Machine) Refused() []string { return m.health.published.Refuse }

// Lease returns the machine's copy of a row.
func (m *Machine) Lease(key string) (lease.Lease, bool) {
	l, ok := m.leases[key]
	return l, ok
}

// Rows returns the machine's copy of the lease table (what its last read
// showed, updated since by gossip and its own writes), sorted by key.
func (m *Machine) Rows() []lease.Lease {
	out := make([]lease.Lease, 0, len(m.leases))
	for _, k := range sortedKeys(m.leases) {
		out = append(out, m.leases[k])
	}
	return out
}

// Stopping reports whether StopAll was received.
func (m *Machine) Stopping() bool { return m.stopping }

func (m *Machine) String() string {
	return fmt.Sprintf("ownership{me=%s leases=%d running=%d members=%d}", m.cfg.Me, len(m.leases), len(m.run), len(m.members))
}
