package kinactor

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kinactor/kinactor/actors"
	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/engine"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/messages"
)

var csNow = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)

func row(key, owner, seq string, parents ...string) lease.Lease {
	return lease.Lease{Key: key, Owner: owner, Counter: 7, Checkpoint: lease.Checkpoint{SequenceNumber: seq}, ParentShardIDs: parents}
}

func alive(name, http string) cluster.Member {
	return cluster.Member{Name: name, Addr: name + ":7946", State: cluster.StateAlive, Meta: cluster.Meta{HTTP: http, App: "app"}}
}

func report(node string, shards ...ShardStatus) memberReport {
	return memberReport{Status: NodeStatus{Node: node, Shards: shards}}
}

func running(id, state string, lag int64, rps float64) ShardStatus {
	return ShardStatus{ShardID: id, State: state, MillisBehindLatest: lag, SinceProgress: 0.5,
		Load: ShardLoad{RecordsPerSec: rps, BytesPerSec: rps * 100, Busy: 0.1, Measured: true, Weight: 0.25}}
}

func shardOf(t *testing.T, cs ClusterStatus, id string) ShardView {
	t.Helper()
	for _, s := range cs.Shards {
		if s.Shard == id {
			return s
		}
	}
	t.Fatalf("shard %s not in the view: %+v", id, cs.Shards)
	return ShardView{}
}

func memberOf(t *testing.T, cs ClusterStatus, name string) MemberView {
	t.Helper()
	for _, m := range cs.Members {
		if m.Name == name {
			return m
		}
	}
	t.Fatalf("member %s not in the view: %+v", name, cs.Members)
	return MemberView{}
}

// TestClusterShardStates: each shard's state from its row and its owner's
// report, with the live fields only where a member that answered runs it.
func TestClusterShardStates(t *testing.T) {
	stalled := running("s-stalled", "Processing", 900, 0)
	stalled.Stalled, stalled.StallCause = true, "processor"
	in := clusterInput{
		Self: "n1", Stream: "orders", App: "app", Now: csNow,
		Rows: []lease.Lease{
			row("s-proc", "n1", "4959000000000000000001"),
			row("s-end", "n1", lease.CheckpointShardEnd),
			row("s-free", "", lease.CheckpointTrimHorizon),
			row("s-child", "n2", lease.CheckpointTrimHorizon, "s-end"),
			row("s-stalled", "n2", "4959000000000000000002"),
			row("s-init", "n2", lease.CheckpointTrimHorizon),
			row("s-stop", "n1", "4959000000000000000003"),
			row("s-idle", "n1", "4959000000000000000004"),
			row("s-down", "n3", "4959000000000000000005"),
			row("s-gone", "n9", "4959000000000000000006"),
		},
		Members: []cluster.Member{alive("n1", "h1"), alive("n2", "h2"), alive("n3", "h3")},
		Reports: map[string]memberReport{
			"n1": report("n1", running("s-proc", "Processing", 1250, 12.5), running("s-stop", "ShuttingDown", 0, 1)),
			"n2": report("n2", running("s-child", "WaitingOnParentShards", 0, 0), stalled, running("s-init", "Initializing", 0, 0)),
			"n3": {Err: errors.New("context deadline exceeded")},
		},
	}
	cs := buildClusterStatus(in)
	cases := []struct {
		shard, owner, state string
		live                bool
	}{
		{"s-proc", "n1", ShardProcessing, true},
		{"s-end", "n1", ShardFinished, false},
		{"s-free", "", ShardUnowned, false},
		{"s-child", "n2", ShardWaiting, true},
		{"s-stalled", "n2", ShardStalled, true},
		{"s-init", "n2", ShardStarting, true},
		{"s-stop", "n1", ShardStopping, true},
		{"s-idle", "n1", ShardNotRunning, false},
		{"s-down", "n3", ShardUnknown, false},
		{"s-gone", "n9", ShardOwnerGone, false},
	}
	for _, c := range cases {
		t.Run(c.shard, func(t *testing.T) {
			s := shardOf(t, cs, c.shard)
			if s.State != c.state || s.Owner != c.owner || s.Stream != "orders" {
				t.Errorf("state %q owner %q stream %q, want %q %q orders", s.State, s.Owner, s.Stream, c.state, c.owner)
			}
			if got := s.MillisBehindLatest != nil && s.RecordsPerSec != nil && s.SinceProgress != nil; got != c.live {
				t.Errorf("live fields known: %v, want %v (%+v)", got, c.live, s)
			}
			if s.Conflict != "" {
				t.Errorf("conflict %q, want none", s.Conflict)
			}
		})
	}
	if s := shardOf(t, cs, "s-proc"); *s.MillisBehindLatest != 1250 || *s.RecordsPerSec != 12.5 || *s.BytesPerSec != 1250 || s.Checkpoint != "4959000000000000000001" || s.Counter != 7 {
		t.Errorf("s-proc: %+v", s)
	}
	if s := shardOf(t, cs, "s-stalled"); s.StallCause != "processor" {
		t.Errorf("s-stalled cause %q, want processor", s.StallCause)
	}
	if s := shardOf(t, cs, "s-child"); len(s.Parents) != 1 || s.Parents[0] != "s-end" || s.ActorState != "WaitingOnParentShards" {
		t.Errorf("s-child: %+v", s)
	}
	if s := shardOf(t, cs, "s-down"); !strings.Contains(s.Note, "deadline exceeded") {
		t.Errorf("s-down note %q, want the owner's error", s.Note)
	}
	want := ClusterSummary{Members: 3, Unreachable: 1, Shards: 10, Owned: 8, Stalled: 1, Finished: 1, Unowned: 1}
	if cs.Summary != want {
		t.Errorf("summary %+v, want %+v", cs.Summary, want)
	}
	for i := 1; i < len(cs.Shards); i++ {
		if cs.Shards[i-1].Shard >= cs.Shards[i].Shard {
			t.Errorf("shards not sorted: %s before %s", cs.Shards[i-1].Shard, cs.Shards[i].Shard)
		}
	}
}

// TestClusterMembers: health from gossip meta and reports; owned counts
// from the table, running and load sums from the report.
func TestClusterMembers(t *testing.T) {
	sick := alive("n2", "h2")
	sick.Meta.Unhealthy = []string{"kinesis"}
	drain := alive("n4", "h4")
	drain.Meta.Draining, drain.Meta.Weight = true, 3
	susp := alive("n5", "h5")
	susp.State = cluster.StateSuspect
	stranger := alive("x1", "hx")
	stranger.Meta.App = "another-app"
	st := running("s2", "Processing", 0, 1)
	st.Stalled = true
	r1 := report("n1", running("s1", "Processing", 10, 2), running("s3", "Processing", 20, 3))
	r1.Status.Refused = []string{"s9"}
	in := clusterInput{
		Self: "n1", Stream: "orders", App: "app", Now: csNow,
		Rows:    []lease.Lease{row("s1", "n1", "1"), row("s2", "n3", "2"), row("s3", "n1", "3"), row("s4", "n1", lease.CheckpointShardEnd)},
		Members: []cluster.Member{alive("n1", "h1"), sick, alive("n3", "h3"), drain, susp, stranger, alive("n6", "")},
		Reports: map[string]memberReport{
			"n1": r1,
			"n2": report("n2"),
			"n3": report("n3", st),
			"n4": report("n4"),
			"n6": {Err: errors.New("no HTTP address gossiped")},
		},
	}
	cs := buildClusterStatus(in)
	if len(cs.Members) != 6 {
		t.Fatalf("members %+v: want n1-n6 without another app's x1", cs.Members)
	}
	health := map[string]string{"n1": "ok", "n2": "unhealthy", "n3": "stalled", "n4": "draining", "n5": "suspect", "n6": "unreachable"}
	for name, h := range health {
		if m := memberOf(t, cs, name); m.Health != h {
			t.Errorf("%s health %q, want %q (%+v)", name, m.Health, h, m)
		}
	}
	n1 := memberOf(t, cs, "n1")
	if !n1.Self || n1.Owned != 2 || n1.Running == nil || *n1.Running != 2 || *n1.RecordsPerSec != 5 || *n1.Load != 0.5 || n1.HTTP != "h1" || n1.Weight != 1 {
		t.Errorf("n1: %+v", n1)
	}
	if len(n1.Refused) != 1 || n1.Refused[0] != "s9" {
		t.Errorf("n1 refused %v, want [s9] from its report", n1.Refused)
	}
	if m := memberOf(t, cs, "n4"); m.Weight != 3 || !m.Draining || m.Self {
		t.Errorf("n4: %+v", m)
	}
	if m := memberOf(t, cs, "n5"); m.Running != nil || m.StatusError == "" {
		t.Errorf("n5 (not asked): %+v", m)
	}
	if m := memberOf(t, cs, "n6"); m.Running != nil || m.Load != nil || !strings.Contains(m.StatusError, "no HTTP") {
		t.Errorf("n6: %+v", m)
	}
	if m := memberOf(t, cs, "n2"); len(m.Unhealthy) != 1 || m.Unhealthy[0] != "kinesis" {
		t.Errorf("n2 unhealthy %v", m.Unhealthy)
	}
}

// TestClusterOwnerDisagreement: the table copy and the live reports
// disagree; the view says so and takes the live fields from the runner.
func TestClusterOwnerDisagreement(t *testing.T) {
	in := clusterInput{
		Self: "n1", Stream: "orders", App: "app", Now: csNow,
		Rows:    []lease.Lease{row("s1", "n1", "1"), row("s2", "n1", "2"), row("s3", "", "3"), row("s4", "n2", "4")},
		Members: []cluster.Member{alive("n1", "h1"), alive("n2", "h2")},
		Reports: map[string]memberReport{
			"n1": report("n1", running("s4", "Processing", 1, 1)),
			"n2": report("n2", running("s1", "Processing", 40, 4), running("s3", "Initializing", 0, 0),
				running("s4", "Processing", 2, 2), running("s5", "Processing", 3, 3)),
		},
	}
	cs := buildClusterStatus(in)
	for _, c := range []struct {
		shard, owner, state, conflict string
		lag                           int64
	}{
		{"s1", "n1", ShardProcessing, "the lease table says n1; n2 runs it", 40},
		{"s3", "", ShardStarting, "the lease table has no owner; n2 runs it", 0},
		{"s4", "n2", ShardProcessing, "run by n1 and n2 at once", 2},
		{"s5", "", ShardProcessing, "not in n1's copy of the lease table; n2 runs it", 3},
	} {
		s := shardOf(t, cs, c.shard)
		if s.Owner != c.owner || s.State != c.state || s.Conflict != c.conflict || s.MillisBehindLatest == nil || *s.MillisBehindLatest != c.lag {
			t.Errorf("%s: owner %q state %q conflict %q lag %v; want %q %q %q %d", c.shard, s.Owner, s.State, s.Conflict, s.MillisBehindLatest, c.owner, c.state, c.conflict, c.lag)
		}
	}
	if s := shardOf(t, cs, "s2"); s.State != ShardNotRunning || s.Conflict != "" {
		t.Errorf("s2: %+v", s)
	}
	if cs.Summary.Conflicts != 4 {
		t.Errorf("conflicts %d, want 4", cs.Summary.Conflicts)
	}
}

// TestClusterMoves: every member's moves, newest first, none older than
// 15 minutes; an unreadable member contributes none.
func TestClusterMoves(t *testing.T) {
	at := func(ago time.Duration) time.Time { return csNow.Add(-ago) }
	r1 := report("n1")
	r1.Status.Moves = []Move{
		{At: at(20 * time.Minute), Shard: "s1", Kind: "take", Reason: "free"},
		{At: at(3 * time.Minute), Shard: "s1", Kind: "handoff", Reason: "assignment", Peer: "n2"},
		{At: at(3*time.Minute - time.Second), Shard: "s1", Kind: "release", Reason: "handoff"},
	}
	r2 := report("n2")
	r2.Status.Moves = []Move{
		{At: at(10 * time.Minute), Shard: "s2", Kind: "take", Reason: "free"},
		{At: at(3*time.Minute - 2*time.Second), Shard: "s1", Kind: "take", Reason: "released", Peer: "n1"},
		{At: at(15 * time.Minute), Shard: "s3", Kind: "take", Reason: "expired"},
	}
	cs := buildClusterStatus(clusterInput{
		Self: "n1", App: "app", Now: csNow,
		Members: []cluster.Member{alive("n1", "h1"), alive("n2", "h2"), alive("n3", "h3")},
		Reports: map[string]memberReport{"n1": r1, "n2": r2, "n3": {Err: errors.New("refused")}},
	})
	var got []string
	for _, m := range cs.Moves {
		got = append(got, m.Node+" "+m.Kind+" "+m.Shard)
	}
	want := []string{"n2 take s1", "n1 release s1", "n1 handoff s1", "n2 take s2", "n2 take s3"}
	if strings.Join(got, ", ") != strings.Join(want, ", ") {
		t.Errorf("moves %v, want %v", got, want)
	}
	if m := cs.Moves[0]; m.Peer != "n1" || m.Reason != "released" {
		t.Errorf("first move %+v", m)
	}
	b, _ := json.Marshal(cs.Moves[0])
	for _, k := range []string{`"node":"n2"`, `"kind":"take"`, `"shard":"s1"`, `"peer":"n1"`, `"reason":"released"`, `"at":`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("move JSON %s lacks %s", b, k)
		}
	}
}

// TestClusterSelfError: a node that cannot read its own status still shows
// its gossip view and says why.
func TestClusterSelfError(t *testing.T) {
	cs := buildClusterStatus(clusterInput{Self: "n1", SelfErr: ErrNotStarted, App: "app", Now: csNow,
		Members: []cluster.Member{alive("n1", "h1")}, Reports: map[string]memberReport{"n1": {Err: ErrNotStarted}}})
	if cs.Error == "" || len(cs.Members) != 1 || cs.Members[0].Health != "unreachable" || len(cs.Shards) != 0 {
		t.Errorf("view %+v", cs)
	}
	b, _ := json.Marshal(cs)
	for _, k := range []string{`"shards":[]`, `"moves":[]`, `"members":[{`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("JSON %s lacks %s (empty lists, not null)", b, k)
		}
	}
}

// TestFetchStatus reads a member's /status and reports one that does not
// answer, answers an error, or answers too late.
func TestFetchStatus(t *testing.T) {
	var slow atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case slow.Load():
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		case r.URL.Path == "/status":
			_ = json.NewEncoder(w).Encode(NodeStatus{Node: "n2", Shards: []ShardStatus{running("s1", "Processing", 5, 1)}})
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	st, err := fetchStatus(context.Background(), addr)
	if err != nil || st.Node != "n2" || len(st.Shards) != 1 || st.Shards[0].MillisBehindLatest != 5 {
		t.Fatalf("fetchStatus: %+v, %v", st, err)
	}
	slow.Store(true)
	began := time.Now()
	if _, err := fetchStatus(context.Background(), addr); err == nil || time.Since(began) > 3*time.Second {
		t.Errorf("slow member: %v after %s, want an error within about %s", err, time.Since(began), clusterFetchTimeout)
	}
	l := httptest.NewServer(http.NotFoundHandler())
	dead := strings.TrimPrefix(l.URL, "http://")
	l.Close()
	if _, err := fetchStatus(context.Background(), dead); err == nil || strings.Contains(err.Error(), "http://") {
		t.Errorf("closed port: %v, want an error without the URL", err)
	}
}

// TestClusterCache builds the view once per second however many ask.
func TestClusterCache(t *testing.T) {
	var c clusterCache
	var builds atomic.Int32
	build := func(context.Context) ClusterStatus {
		builds.Add(1)
		return ClusterStatus{Node: "n1"}
	}
	for i := 0; i < 5; i++ {
		if cs := c.get(context.Background(), build); cs.Node != "n1" {
			t.Fatal(cs)
		}
	}
	if n := builds.Load(); n != 1 {
		t.Errorf("%d builds within a second, want 1", n)
	}
	c.at = time.Now().Add(-2 * clusterCacheFor)
	c.get(context.Background(), build)
	if n := builds.Load(); n != 2 {
		t.Errorf("%d builds after the cache aged, want 2", n)
	}
}

func unstartedNode(t *testing.T) *Node {
	t.Helper()
	cfg := validConfig()
	cfg.WorkerID = "n1"
	cfg.Registerer = prometheus.NewRegistry()
	n, err := NewNode(cfg, actors.FuncProcessor(func(context.Context, messages.Batch) error { return nil }))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func get(t *testing.T, h http.Handler, path string) (*http.Response, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	resp := rec.Result()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// TestStatusPageHandlers: / is the page, self-contained, with the first
// snapshot inlined; /cluster is the view as JSON; /metrics, /healthz,
// /readyz and /status are served as before.
func TestStatusPageHandlers(t *testing.T) {
	h := unstartedNode(t).Handler()

	resp, body := get(t, h, "/")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("/: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"<!doctype html>", `id="members"`, `id="shards"`, `id="moves"`, `fetch("cluster"`, `"node":"n1"`} {
		if !strings.Contains(body, want) {
			t.Errorf("/ lacks %q", want)
		}
	}
	if strings.Contains(body, initialMarker) {
		t.Error("/ still has the snapshot marker")
	}
	for _, page := range []string{statusPage, body} {
		if m := regexp.MustCompile(`(?i)https?://[^\s"'<>)]*`).FindAllString(page, -1); len(m) > 0 {
			t.Errorf("the page refers to other hosts: %v", m)
		}
		if m := regexp.MustCompile(`(?i)<(script|link|img|iframe)[^>]+(src|href)="(//|[a-z]+:)[^"]*"`).FindAllString(page, -1); len(m) > 0 {
			for _, s := range m {
				if !strings.Contains(s, `href="data:`) {
					t.Errorf("the page loads an external asset: %s", s)
				}
			}
		}
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("CSP %q", csp)
	}
	if resp, _ := get(t, h, "/index.html"); resp.StatusCode != 404 {
		t.Errorf("/index.html: %d, want 404 (the page is at / exactly)", resp.StatusCode)
	}

	resp, body = get(t, h, "/cluster")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("/cluster: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var cs ClusterStatus
	if err := json.Unmarshal([]byte(body), &cs); err != nil {
		t.Fatalf("/cluster: %v\n%s", err, body)
	}
	if cs.Node != "n1" || !strings.Contains(cs.Error, "not started") || len(cs.Members) != 1 || cs.Members[0].Name != "n1" || cs.Shards == nil {
		t.Errorf("/cluster of an unstarted node: %+v", cs)
	}

	if resp, body := get(t, h, "/metrics"); resp.StatusCode != 200 || !strings.Contains(body, "kinactor_") {
		t.Errorf("/metrics: %d %.200s", resp.StatusCode, body)
	}
	if resp, body := get(t, h, "/healthz"); resp.StatusCode != 503 || !strings.Contains(body, "not started") {
		t.Errorf("/healthz of an unstarted node: %d %q", resp.StatusCode, body)
	}
	if resp, _ := get(t, h, "/readyz"); resp.StatusCode != 503 {
		t.Errorf("/readyz of an unstarted node: %d", resp.StatusCode)
	}
	if resp, body := get(t, h, "/status"); resp.StatusCode != 200 || !strings.Contains(body, `"node":"n1"`) {
		t.Errorf("/status: %d %q", resp.StatusCode, body)
	}
}

// TestClusterMultiStream: two streams whose shards have the same shard ids,
// rows keyed by multi-stream lease keys. Status rows are merged with lease
// rows by key (not by the shard id they show), and every row carries its
// stream's name and shard id; rows are sorted by stream, then shard.
func TestClusterMultiStream(t *testing.T) {
	const s0, s1 = "shardId-000000000000", "shardId-000000000001"
	orders := "123456789012:orders:1700000000:"
	payments := "123456789012:payments:1700000001:"
	// /status rows as nodes build them from the engine's (keyed by lease key).
	live := func(key string, lag int64) ShardStatus {
		return shardStatusOf(engine.ShardStatus{ShardID: key, State: "Processing", MillisBehindLatest: lag, SinceProgress: 0.5}, "ignored")
	}
	if st := live(payments+s1, 1); st.Stream != "payments" || st.ShardID != s1 || st.Key != payments+s1 {
		t.Fatalf("status row %+v", st)
	}
	if st := live(s1, 1); st.Stream != "ignored" || st.ShardID != s1 || st.Key != "" {
		t.Fatalf("single-stream status row %+v: want no key", st)
	}
	old := running(payments+s0, "Processing", 30, 3) // a node that predates Key: ShardID is the lease key
	r1 := report("n1", live(orders+s0, 10), live(payments+s1, 40))
	r1.Status.Moves = []Move{moveOf(engine.Move{At: csNow.Add(-time.Minute), Shard: payments + s1, Kind: "take", Reason: "free"}, "ignored")}
	r2 := report("n2", old, live(orders+s1, 20))
	r2.Status.Moves = []Move{{At: csNow.Add(-2 * time.Minute), Shard: orders + s1, Kind: "take", Reason: "expired"}} // predates Stream
	cs := buildClusterStatus(clusterInput{
		Self: "n1", App: "app", Now: csNow,
		Rows: []lease.Lease{
			row(payments+s1, "n1", "4"), row(orders+s1, "n2", "2"),
			row(payments+s0, "n2", "3"), row(orders+s0, "n1", "1"),
		},
		Members: []cluster.Member{alive("n1", "h1"), alive("n2", "h2")},
		Reports: map[string]memberReport{"n1": r1, "n2": r2},
	})
	want := []struct {
		stream, shard, key, owner string
		lag                       int64
	}{
		{"orders", s0, orders + s0, "n1", 10},
		{"orders", s1, orders + s1, "n2", 20},
		{"payments", s0, payments + s0, "n2", 30},
		{"payments", s1, payments + s1, "n1", 40},
	}
	if len(cs.Shards) != len(want) {
		t.Fatalf("%d shards in the view, want %d: %+v", len(cs.Shards), len(want), cs.Shards)
	}
	for i, w := range want {
		s := cs.Shards[i]
		if s.Stream != w.stream || s.Shard != w.shard || s.Key != w.key || s.Owner != w.owner || s.State != ShardProcessing ||
			s.Conflict != "" || len(s.Running) != 1 || s.Running[0] != w.owner || s.MillisBehindLatest == nil || *s.MillisBehindLatest != w.lag {
			t.Errorf("row %d: %+v (lag %v), want %+v", i, s, s.MillisBehindLatest, w)
		}
	}
	if want := (ClusterSummary{Members: 2, Shards: 4, Owned: 4}); cs.Summary != want {
		t.Errorf("summary %+v, want %+v", cs.Summary, want)
	}
	var got []string
	for _, m := range cs.Moves {
		got = append(got, m.Node+" "+m.Stream+" "+m.Shard+" "+m.Key)
	}
	if w := []string{"n1 payments " + s1 + " " + payments + s1, "n2 orders " + s1 + " " + orders + s1}; strings.Join(got, ", ") != strings.Join(w, ", ") {
		t.Errorf("moves %v, want %v", got, w)
	}
	b, _ := json.Marshal(cs.Shards[3])
	for _, k := range []string{`"stream":"payments"`, `"shard":"` + s1 + `"`, `"key":"` + payments + s1 + `"`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("shard JSON %s lacks %s", b, k)
		}
	}
	b, _ = json.Marshal(live(payments+s1, 1))
	for _, k := range []string{`"stream":"payments"`, `"shard":"` + s1 + `"`, `"key":"` + payments + s1 + `"`} {
		if !strings.Contains(string(b), k) {
			t.Errorf("/status row JSON %s lacks %s", b, k)
		}
	}
}
