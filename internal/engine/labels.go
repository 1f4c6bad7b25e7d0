package engine

import "github.com/kinactor/kinactor/internal/multistream"

// ShardLabels are the stream and shard under which a lease key is shown
// (metrics labels, status): for a multi-stream key
// (account:stream:creationEpoch:shardId) its stream's name and shard id;
// for any other key (a plain shard id, single-stream mode) single, the
// configured stream's name, and the key itself.
func ShardLabels(key, single string) (stream, shard string) {
	if id, s, ok := multistream.ParseKey(key); ok {
		return id.Name, s
	}
	return single, key
}

// shardLabels are the stream and shard labels of key's metric series.
func (d *Deps) shardLabels(key string) (stream, shard string) {
	return ShardLabels(key, d.StreamName)
}
