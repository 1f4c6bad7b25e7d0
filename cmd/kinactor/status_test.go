package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/kinactor/kinactor"
	"github.com/kinactor/kinactor/cluster"
	"github.com/kinactor/kinactor/internal/lease"
	"github.com/kinactor/kinactor/internal/stream"
)

// cannedStatus is a node's /status as kinactor.NodeStatus encodes it: one
// healthy shard, one stalled on Kinesis, one stalled with no cause given,
// and one without the lag and progress fields (zero).
const cannedStatus = `{
  "node": "worker-a",
  "members": [
    {"name": "worker-a", "addr": "10.0.0.1:7946", "meta": {"v": "dev"}, "state": "alive"},
    {"name": "worker-b", "addr": "10.0.0.2:7946", "meta": {}, "state": "suspect"}
  ],
  "shards": [
    {"shard": "shardId-000000000000", "state": "processing", "checkpoint": "49590338271490256608559692538361571095921575989136588898",
     "millis_behind_latest": 1250, "since_progress_seconds": 0.4},
    {"shard": "shardId-000000000001", "state": "fetching", "checkpoint": "TRIM_HORIZON",
     "millis_behind_latest": 7380000, "since_progress_seconds": 95.2, "stalled": true, "stall_cause": "kinesis"},
    {"shard": "shardId-000000000002", "state": "checkpointing", "checkpoint": "SHARD_END",
     "millis_behind_latest": 0, "since_progress_seconds": 4000, "stalled": true},
    {"shard": "shardId-000000000003", "state": "processing", "checkpoint": "AT_TIMESTAMP"}
  ],
  "unhealthy": ["dynamodb", "processor"],
  "refused": ["shardId-000000000007", "shardId-000000000009"]
}
`

// statusServer serves body as /status (with code) and counts the requests.
func statusServer(t *testing.T, code int, body string) (*httptest.Server, *int) {
	t.Helper()
	hits := new(int)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/status" || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		*hits++
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	return srv, hits
}

func TestStatusNodeView(t *testing.T) {
	srv, hits := statusServer(t, http.StatusOK, cannedStatus)
	ctx := context.Background()
	// --http takes host:port (as a node's --http); a URL works too.
	st, err := fetchNodeStatus(ctx, srv.Listener.Addr().String())
	if err != nil {
		t.Fatalf("fetchNodeStatus: %v", err)
	}
	if _, err := fetchNodeStatus(ctx, srv.URL+"/"); err != nil {
		t.Fatalf("fetchNodeStatus by URL: %v", err)
	}
	if *hits != 2 {
		t.Errorf("%d requests to /status, want 2", *hits)
	}
	var out bytes.Buffer
	if err := printNodeStatus(&out, st); err != nil {
		t.Fatal(err)
	}
	t.Logf("output:\n%s", out.String())
	text := out.String()
	for _, want := range []string{
		"node worker-a sees 2 members:\n",
		"node worker-a is unhealthy: cannot use dynamodb, processor\n",
		"node worker-a refuses 2 shards: shardId-000000000007, shardId-000000000009\n",
		"node worker-a runs 4 shards, 2 stalled:\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}

	// The shard table: a header and one row per shard, every column
	// starting at the header's offset (tabwriter counts runes).
	cols := []string{"shard", "actor state", "checkpoint", "behind latest", "since progress", "stall"}
	want := map[string][]string{
		"shardId-000000000000": {"processing", "49590338…588898", "1.25s", "400ms", "-"},
		"shardId-000000000001": {"fetching", "TRIM_HORIZON", "2h03m", "1m35s", "STALLED (kinesis)"},
		"shardId-000000000002": {"checkpointing", "SHARD_END", "0s", "1h06m", "STALLED"},
		"shardId-000000000003": {"processing", "AT_TIMESTAMP", "0s", "0s", "-"},
	}
	lines := strings.Split(text, "\n")
	hdr := -1
	for i, l := range lines {
		if strings.HasPrefix(l, "shard ") && strings.Contains(l, "behind latest") {
			hdr = i
		}
	}
	if hdr < 0 {
		t.Fatalf("no shard table header")
	}
	offsets := make([]int, len(cols))
	for i, c := range cols {
		b := strings.Index(lines[hdr], c)
		if b < 0 {
			t.Fatalf("header %q lacks column %q", lines[hdr], c)
		}
		offsets[i] = utf8.RuneCountInString(lines[hdr][:b])
	}
	rows := 0
	for _, l := range lines[hdr+1:] {
		if l == "" {
			continue
		}
		rows++
		r := []rune(l)
		var got []string
		for i := range cols {
			end := len(r)
			if i+1 < len(cols) {
				end = offsets[i+1]
			}
			if offsets[i] > len(r) || end > len(r) || (offsets[i] > 0 && r[offsets[i]-1] != ' ') {
				t.Fatalf("row %q is not aligned with the header %q", l, lines[hdr])
			}
			got = append(got, strings.TrimSpace(string(r[offsets[i]:end])))
		}
		w, ok := want[got[0]]
		if !ok {
			t.Errorf("unexpected row %q", l)
			continue
		}
		if strings.Join(got[1:], "|") != strings.Join(w, "|") {
			t.Errorf("row %s: %q, want %q", got[0], got[1:], w)
		}
	}
	if rows != len(want) {
		t.Errorf("%d shard rows, want %d", rows, len(want))
	}

	// A healthy node prints no health lines and no stall count.
	srv2, _ := statusServer(t, http.StatusOK, `{"node":"worker-b","members":[],"shards":[{"shard":"shardId-000000000000","state":"processing","checkpoint":"TRIM_HORIZON","millis_behind_latest":0,"since_progress_seconds":1}]}`)
	st, err = fetchNodeStatus(ctx, srv2.URL)
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := printNodeStatus(&out, st); err != nil {
		t.Fatal(err)
	}
	for _, no := range []string{"unhealthy", "refuses", "stalled", "STALLED"} {
		if strings.Contains(out.String(), no) {
			t.Errorf("healthy node's output mentions %q:\n%s", no, out.String())
		}
	}
	if !strings.Contains(out.String(), "node worker-b runs 1 shard:\n") {
		t.Errorf("healthy node's output:\n%s", out.String())
	}

	// A node that cannot answer.
	srv3, _ := statusServer(t, http.StatusServiceUnavailable, "coordinator busy\n")
	if _, err := fetchNodeStatus(ctx, srv3.URL); err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "coordinator busy") {
		t.Errorf("503: err = %v", err)
	}
}

// What a node writes as /status, status reads back as it was, the members'
// states included.
func TestStatusJSONMatchesNodeStatus(t *testing.T) {
	want := kinactor.NodeStatus{
		Node: "n1",
		Members: []cluster.Member{
			{Name: "n1", Addr: "a:1", State: cluster.StateAlive, Meta: cluster.Meta{Version: "dev", HTTP: "a:2"}},
			{Name: "n2", Addr: "a:3", State: cluster.StateSuspect},
			{Name: "n3", Addr: "a:4", State: cluster.StateLeft},
		},
		Shards: []kinactor.ShardStatus{{
			ShardID: "shardId-000000000000", State: "fetching", Checkpoint: "TRIM_HORIZON",
			MillisBehindLatest: 42, SinceProgress: 1.5, Stalled: true, StallCause: "dynamodb",
		}},
		Unhealthy: []string{"kinesis"},
		Refused:   []string{"shardId-000000000001"},
	}
	b, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeNodeStatus(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("decoded\n%+v\nwant\n%+v\n(from %s)", got, want, b)
	}
	var out bytes.Buffer
	if err := printNodeStatus(&out, got); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^n2\s+a:3\s+suspect$`).MatchString(out.String()) {
		t.Errorf("member n2 not printed as suspect:\n%s", out.String())
	}
}

func TestShortDuration(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{999 * time.Microsecond, "0ms"},
		{850 * time.Millisecond, "850ms"},
		{time.Second, "1.00s"},
		{1250 * time.Millisecond, "1.25s"},
		{12345 * time.Millisecond, "12.3s"},
		{59900 * time.Millisecond, "59.9s"},
		{time.Minute, "1m00s"},
		{4*time.Minute + 5*time.Second + 900*time.Millisecond, "4m05s"},
		{time.Hour + 6*time.Minute + 40*time.Second, "1h06m"},
		{23*time.Hour + 59*time.Minute, "23h59m"},
		{3*24*time.Hour + 4*time.Hour + 30*time.Minute, "3d04h"},
		{-2 * time.Second, "-2.00s"},
	} {
		if got := shortDuration(c.d); got != c.want {
			t.Errorf("shortDuration(%s) = %q, want %q", c.d, got, c.want)
		}
	}
}

// TestShardTableMultiStream: a multi-stream table printed for the streams
// named: a stream column, shard ids without their stream (parents and
// children too), a row past retention as expired, and the rows of a
// stream not named counted under the table, not printed.
func TestShardTableMultiStream(t *testing.T) {
	a, b, gone := "111122223333:orders:1700000000", "111122223333:clicks:1700000001", "111122223333:old:1600000000"
	shards := []stream.Shard{
		{ID: a + ":shardId-000000000000", EndingSequenceNumber: "9"},
		{ID: a + ":shardId-000000000001", ParentShardID: a + ":shardId-000000000000"},
		{ID: b + ":shardId-000000000000"},
	}
	leases := []lease.Lease{
		{Key: a + ":shardId-000000000000", Checkpoint: lease.Checkpoint{SequenceNumber: lease.CheckpointShardEnd}, Counter: 7, ChildShardIDs: []string{a + ":shardId-000000000001"}},
		{Key: a + ":shardId-000000000001", Owner: "n1", Counter: 3, Checkpoint: lease.Checkpoint{SequenceNumber: "49590338271490256608559692538361571095921575989136588898"}},
		{Key: b + ":shardId-000000000007", Owner: "n2", Counter: 2},
		{Key: gone + ":shardId-000000000000"},
		{Key: gone + ":shardId-000000000001"},
	}
	var out bytes.Buffer
	if err := printShardTable(&out, shards, leases, map[string]string{a: "orders", b: "clicks"}); err != nil {
		t.Fatal(err)
	}
	want := []string{
		`(?m)^stream\s+shard\s+state\s+owner`,
		`(?m)^clicks\s+shardId-000000000000\s+open\s+-\s+-\s+-\s+-\s+-$`,
		`(?m)^clicks\s+shardId-000000000007\s+expired\s+n2\s+2\s`,
		`(?m)^orders\s+shardId-000000000000\s+finished\s+-\s+7\s+SHARD_END\s+-\s+shardId-000000000001$`,
		`(?m)^orders\s+shardId-000000000001\s+open\s+n1\s+3\s+\S+\s+shardId-000000000000\s+-$`,
		`(?m)^rows kept for streams not named: ` + gone + ` \(2 rows\)$`,
	}
	for _, re := range want {
		if !regexp.MustCompile(re).MatchString(out.String()) {
			t.Errorf("no line matching %s in:\n%s", re, out.String())
		}
	}
	if strings.Contains(out.String(), "111122223333:orders") {
		t.Errorf("shard ids printed with their stream:\n%s", out.String())
	}
}

func TestStatusStreamNames(t *testing.T) {
	got, err := statusStreamNames("a, b,a")
	if err != nil || !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("statusStreamNames: %v, %v", got, err)
	}
	for _, bad := range []string{"a,,b", "a,b c", "x:y"} {
		if _, err := statusStreamNames(bad); err == nil || !strings.Contains(err.Error(), "--stream") || !strings.Contains(err.Error(), bad) {
			t.Errorf("statusStreamNames(%q): %v, want an error naming --stream and the value", bad, err)
		}
	}
}

// TestForgetRules: what `kinactor forget` deletes: the released rows of
// the stream of that name (every epoch), nothing while one is owned or
// when one is written or appears during the wait, and nothing from a
// single-stream table.
func TestForgetRules(t *testing.T) {
	old, again, other := "111122223333:orders:1600000000", "111122223333:orders:1700000000", "111122223333:clicks:1700000000"
	leases := []lease.Lease{
		{Key: again + ":shardId-000000000001", Counter: 4},
		{Key: old + ":shardId-000000000000", Counter: 9},
		{Key: other + ":shardId-000000000000", Owner: "n1", Counter: 3},
	}
	rows, err := rowsToForget("t", "orders", leases)
	if err != nil || len(rows) != 2 || rows[0].Key != old+":shardId-000000000000" || rows[1].Key != again+":shardId-000000000001" {
		t.Fatalf("rowsToForget: %+v, %v; want orders' two rows in key order", rows, err)
	}
	if err := unchanged("orders", rows, leases); err != nil {
		t.Fatalf("unchanged rows: %v", err)
	}
	if _, err := rowsToForget("t", "clicks", leases); err == nil || !strings.Contains(err.Error(), "owner n1") {
		t.Fatalf("an owned row: %v, want an error naming its owner", err)
	}
	if _, err := rowsToForget("t", "orders", append(leases, lease.Lease{Key: "shardId-000000000000"})); err == nil || !strings.Contains(err.Error(), "not a multi-stream table") {
		t.Fatalf("a single-stream row: %v", err)
	}
	taken := slices.Clone(leases)
	taken[0].Owner, taken[0].Counter = "n2", 5
	if err := unchanged("orders", rows, taken); err == nil || !strings.Contains(err.Error(), again+":shardId-000000000001") {
		t.Fatalf("a row taken during the wait: %v", err)
	}
	written := slices.Clone(leases)
	written[1].Counter = 10
	if err := unchanged("orders", rows, written); err == nil || !strings.Contains(err.Error(), "counter 9, then 10") {
		t.Fatalf("a row written during the wait: %v", err)
	}
	appeared := append(slices.Clone(leases), lease.Lease{Key: again + ":shardId-000000000002"})
	if err := unchanged("orders", rows, appeared); err == nil || !strings.Contains(err.Error(), "appeared") {
		t.Fatalf("a row created during the wait: %v", err)
	}
}
