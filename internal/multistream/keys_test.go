package multistream

import "testing"

func TestParseKey(t *testing.T) {
	for _, c := range []struct {
		key, stream, shard string
		ok                 bool
	}{
		{"123456789012:orders:1700000000:shardId-000000000001", "123456789012:orders:1700000000", "shardId-000000000001", true},
		{"000000000000:a.b-c_d:0:shardId-1", "000000000000:a.b-c_d:0", "shardId-1", true},
		{"shardId-000000000001", "", "", false},
		{"123:orders:notanumber:shardId-1", "", "", false},
		{"abc:orders:1:shardId-1", "", "", false},
		{"123:or/ders:1:shardId-1", "", "", false},
		{"123:orders:1:", "", "", false},
		{"123:orders:1:shard:extra", "", "", false},
		{"", "", "", false},
	} {
		id, shard, ok := ParseKey(c.key)
		if ok != c.ok || (ok && (id.String() != c.stream || shard != c.shard)) {
			t.Errorf("ParseKey(%q) = %v %q %v, want %q %q %v", c.key, id, shard, ok, c.stream, c.shard, c.ok)
		}
		if ok && id.Key(shard) != c.key {
			t.Errorf("Key round trip: %q != %q", id.Key(shard), c.key)
		}
		if StreamOf(c.key) != c.stream {
			t.Errorf("StreamOf(%q) = %q", c.key, StreamOf(c.key))
		}
	}
	if ShardOf("shardId-7") != "shardId-7" || ShardOf("1:s:2:shardId-7") != "shardId-7" {
		t.Error("ShardOf")
	}
	if _, err := ParseID("1:s"); err == nil {
		t.Error("ParseID accepted 1:s")
	}
	if id, err := ParseID("1:s:2"); err != nil || id != (ID{"1", "s", 2}) {
		t.Errorf("ParseID = %v %v", id, err)
	}
}
