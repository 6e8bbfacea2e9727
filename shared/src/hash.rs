//! Stable hashes and idempotency tokens derived from what is being done.
//!
//! Used by the pure domain (bounded dedupe keys in classification) and by every
//! adapter that needs a client token (backends, escalation schedules): the same
//! inputs give the same token in every build and on every platform, so a retried
//! invocation repeats the same request instead of doing the work twice.

/// A 128-bit FNV-1a hash: stable across builds and platforms (unlike std's
/// `DefaultHasher`), so a token computed by a retry after a redeploy still matches.
pub fn stable_hash(parts: &[&str]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h = OFFSET;
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            // A separator that cannot occur in UTF-8, so ("ab","c") != ("a","bc").
            h ^= 0xff;
            h = h.wrapping_mul(PRIME);
        }
        for b in part.bytes() {
            h ^= u128::from(b);
            h = h.wrapping_mul(PRIME);
        }
    }
    h
}

/// A deterministic token in UUID (version 4 layout) format, as SSM's
/// `StartAutomationExecution` requires for `ClientToken`; also accepted by
/// Incident Manager (any string up to 128 characters).
pub fn token_uuid(parts: &[&str]) -> String {
    let mut h = stable_hash(parts);
    // Version 4 and RFC 4122 variant bits, so strict UUID validators accept it.
    h &= !(0xF << 76);
    h |= 0x4 << 76;
    h &= !(0x3 << 62);
    h |= 0x2 << 62;
    let hex = format!("{h:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_uuid_is_deterministic_uuid_v4_shaped() {
        let a = token_uuid(&[
            "arn:aws:cloudwatch:eu-west-1:1:alarm:x",
            "2026-11-25T10:01:00.490Z",
        ]);
        let b = token_uuid(&[
            "arn:aws:cloudwatch:eu-west-1:1:alarm:x",
            "2026-11-25T10:01:00.490Z",
        ]);
        let c = token_uuid(&[
            "arn:aws:cloudwatch:eu-west-1:1:alarm:x",
            "2026-11-25T10:01:00.491Z",
        ]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 36);
        let groups: Vec<&str> = a.split('-').collect();
        assert_eq!(
            groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
            vec![8, 4, 4, 4, 12]
        );
        assert!(groups[2].starts_with('4'), "{a}");
        assert!(
            matches!(groups[3].chars().next(), Some('8' | '9' | 'a' | 'b')),
            "{a}"
        );
    }

    #[test]
    fn stable_hash_separates_parts() {
        assert_ne!(stable_hash(&["ab", "c"]), stable_hash(&["a", "bc"]));
        // Pinned value: a change would break idempotency across deployments.
        assert_eq!(
            format!("{:032x}", stable_hash(&[""])),
            "6c62272e07bb014262b821756295c58d"
        );
    }
}
