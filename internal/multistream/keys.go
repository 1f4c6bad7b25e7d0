// Package multistream owns what one application consuming many streams
// needs below the ownership machine: the lease keys of the Java KCL's
// multi-stream mode ("account:stream:creationEpoch:shardId"), resolving a
// stream name to that identifier, and a Set that lists and reads every
// stream of the set through one engine.StreamAPI, in which shard ids are
// lease keys. The pure key functions are used by the lease codec, the
// ownership machine (which keys are this application's) and the metrics
// (the stream label).
package multistream

import (
	"fmt"
	"strconv"
	"strings"
)

// ID identifies a stream as the KCL's multi-stream mode does: the account
// that owns it, its name and its creation time (Unix seconds), so that a
// stream deleted and created again under the same name is another stream.
type ID struct {
	Account string
	Name    string
	Epoch   int64
}

// String is the KCL's serialized stream identifier, account:name:epoch
// (the lease row's streamName attribute).
func (id ID) String() string {
	return id.Account + ":" + id.Name + ":" + strconv.FormatInt(id.Epoch, 10)
}

// Key is the lease key of a shard of the stream.
func (id ID) Key(shardID string) string { return id.String() + ":" + shardID }

// ParseID parses account:name:epoch.
func ParseID(s string) (ID, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return ID{}, fmt.Errorf("stream identifier %q: want account:name:creationEpoch", s)
	}
	id, ok := idOf(parts[0], parts[1], parts[2])
	if !ok {
		return ID{}, fmt.Errorf("stream identifier %q: want account:name:creationEpoch with a numeric account and epoch and a valid stream name", s)
	}
	return id, nil
}

func idOf(account, name, epoch string) (ID, bool) {
	if !digits(account) || !ValidName(name) || !digits(epoch) {
		return ID{}, false
	}
	e, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return ID{}, false
	}
	return ID{Account: account, Name: name, Epoch: e}, true
}

// ParseKey splits a multi-stream lease key into its stream and shard id;
// ok is false for anything else (a plain shard id among them).
func ParseKey(key string) (id ID, shardID string, ok bool) {
	parts := strings.Split(key, ":")
	if len(parts) != 4 || !IsShardID(parts[3]) {
		return ID{}, "", false
	}
	id, ok = idOf(parts[0], parts[1], parts[2])
	if !ok {
		return ID{}, "", false
	}
	return id, parts[3], true
}

// IsKey reports whether key is a multi-stream lease key.
func IsKey(key string) bool {
	_, _, ok := ParseKey(key)
	return ok
}

// StreamOf is the stream id part of a multi-stream key ("" otherwise).
func StreamOf(key string) string {
	if id, _, ok := ParseKey(key); ok {
		return id.String()
	}
	return ""
}

// ShardOf is the Kinesis shard id of a lease key: the last part of a
// multi-stream key, the key itself otherwise.
func ShardOf(key string) string {
	if _, s, ok := ParseKey(key); ok {
		return s
	}
	return key
}

// IsShardID reports whether s has the form Kinesis gives shard ids: 1 to
// 128 of A-Z, a-z, 0-9, '_', '.', '-'.
func IsShardID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '_', c == '.', c == '-':
		default:
			return false
		}
	}
	return true
}

// ValidName reports whether s is a valid Kinesis stream name: 1 to 128 of
// a-z, A-Z, 0-9, '_', '.', '-'.
func ValidName(s string) bool { return IsShardID(s) }

func digits(s string) bool {
	if s == "" || len(s) > 19 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
