package kinactor

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kinactor/kinactor/internal/engine"
	"github.com/kinactor/kinactor/internal/metrics"
)

// The stream label is the configured stream's name (StreamName, or the
// name in StreamARN) for plain shard ids, and a multi-stream key's own.
func TestStreamLabelOfProgress(t *testing.T) {
	if s := streamName(Config{StreamARN: "arn:aws:kinesis:eu-west-1:123456789012:stream/orders"}); s != "orders" {
		t.Errorf("streamName of an ARN: %q", s)
	}
	now := time.Unix(1_800_000_000, 0)
	views := []engine.ShardView{
		{ShardID: "shardId-000000000001", LastProgress: now.Add(-1500 * time.Millisecond)},
		{ShardID: "123456789012:payments:1700000000:shardId-000000000001", LastProgress: now.Add(-4 * time.Second)},
		// The same stream created again: one series, the staler.
		{ShardID: "123456789012:payments:1600000000:shardId-000000000001", LastProgress: now.Add(-9 * time.Second)},
	}
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	m.SetProgressSource(func() map[metrics.ShardLabels]float64 { return progressOf(views, "orders", now) })
	want := `# HELP kinactor_shard_seconds_since_progress Seconds since each shard this node runs last made progress (a successful fetch or a processor answer).
# TYPE kinactor_shard_seconds_since_progress gauge
kinactor_shard_seconds_since_progress{shard="shardId-000000000001",stream="orders"} 1.5
kinactor_shard_seconds_since_progress{shard="shardId-000000000001",stream="payments"} 9
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "kinactor_shard_seconds_since_progress"); err != nil {
		t.Error(err)
	}
}
