//! Redis Cluster slots: the hash that maps a key to its slot, and the partition tags that
//! spread decisions evenly over the slots.

/// Slots in a Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a key (or shard channel), honouring a `{hash tag}` as Redis does: the part
/// between the first `{` and the next `}`, when that part is not empty.
pub(crate) fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &bytes[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(bytes);
    crc16(hashed) % SLOTS
}

/// The partition (`0..partitions`) a decision belongs to: where its name hashes among
/// the slots, so that decisions spread the way keys do.
pub(crate) fn partition_of(name: &str, partitions: usize) -> usize {
    usize::from(crc16(name.as_bytes()) % SLOTS) * partitions / usize::from(SLOTS)
}

/// One hash tag per partition, the first of `p<partition>.<n>` (n = 0, 1, ...) whose slot
/// falls in that partition's share of the slots. A cluster that splits its slots into
/// equal ranges (as `redis-cli --cluster create` does) then holds an equal number of
/// partitions on each primary. Never changes: the tags are part of key names.
pub(crate) fn partition_tags(partitions: usize) -> Vec<String> {
    (0..partitions)
        .map(|partition| {
            (0u32..)
                .map(|n| format!("p{partition}.{n}"))
                .find(|tag| {
                    usize::from(key_slot(tag)) * partitions / usize::from(SLOTS) == partition
                })
                .expect("every share of the slots has a tag")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("bar"), 5061);
        assert_eq!(key_slot("{foo}.bar"), 12182);
        assert_eq!(key_slot("x{foo}y{bar}"), 12182);
        assert_eq!(key_slot("{}foo"), key_slot("{}foo"));
        assert_ne!(
            key_slot("{}foo"),
            key_slot("foo"),
            "an empty tag hashes the whole key"
        );
        assert_eq!(key_slot("123456789"), 0x31C3 % SLOTS);
    }

    #[test]
    fn partition_tags_fall_in_their_own_share_of_the_slots() {
        let tags = partition_tags(64);
        assert_eq!(tags.len(), 64);
        for (partition, tag) in tags.iter().enumerate() {
            let slot = usize::from(key_slot(&format!("cb:x:{{{tag}}}:y")));
            assert_eq!(slot * 64 / usize::from(SLOTS), partition, "tag {tag}");
        }
        // Three equal slot ranges hold 21 or 22 partitions each.
        let mut per_third = [0; 3];
        for tag in &tags {
            per_third[usize::from(key_slot(tag)) * 3 / usize::from(SLOTS)] += 1;
        }
        assert!(
            per_third.iter().all(|n| (21..=22).contains(n)),
            "{per_third:?}"
        );
    }

    #[test]
    fn decisions_spread_over_partitions() {
        let mut counts = [0; 8];
        for n in 0..8000 {
            counts[partition_of(&format!("decision-{n}"), 8)] += 1;
        }
        assert!(counts.iter().all(|c| (800..1200).contains(c)), "{counts:?}");
    }
}
